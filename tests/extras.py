"""Optional dependencies that `make install` always installs (the extras sim, libero, text, export, ...).

A test that needs one imports it with `require`: when the extra is missing the test fails, naming the
extra to install, instead of skipping, so a broken install cannot turn part of CI green by skipping it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def require(module: str, extra: str) -> ModuleType:
    """`import module`, or fail the test (or its module's collection) with the pip command that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not installed (pip install 'vlaforge[{extra}]'): {e}", pytrace=False)
