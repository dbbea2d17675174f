"""Small synthetic datasets shared by the dataset tests (written once per session, copied to corrupt)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import make_episodes, write_dataset


@pytest.fixture(scope="session")
def episodes() -> list[dict[str, np.ndarray]]:
    return make_episodes()


@pytest.fixture(scope="session")
def v30_root(tmp_path_factory, episodes) -> Path:
    return write_dataset(tmp_path_factory.mktemp("v30") / "ds", episodes)


@pytest.fixture(scope="session")
def v21_root(tmp_path_factory, episodes) -> Path:
    return write_dataset(tmp_path_factory.mktemp("v21") / "ds", episodes, version="v2.1")


@pytest.fixture(params=["v3.0", "v2.1"])
def any_root(request, v30_root, v21_root) -> Path:
    return v30_root if request.param == "v3.0" else v21_root


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(root) -> a private copy under tmp_path that a test may damage."""

    def _copy(root: Path) -> Path:
        dst = tmp_path / f"copy-{root.parent.name}"
        shutil.copytree(root, dst)
        return dst

    return _copy
