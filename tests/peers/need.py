"""Peer checks: each test imports a reference implementation (LeRobot, timm, openpi-client) and compares
vlaforge with it. Where a peer is not installed the test is skipped with the reason; `make test-peers` and
`make test-peers-next` set VLAFORGE_REQUIRE_PEERS=1, so that there a missing or broken peer fails instead
of skipping."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def need(module: str, what: str, target: str = "test-peers") -> ModuleType:
    """Import a peer module, or skip the test module saying what to install (``make target``)."""
    if os.environ.get("VLAFORGE_REQUIRE_PEERS") == "1":
        return importlib.import_module(module)  # an ImportError fails the run
    return pytest.importorskip(module, reason=f"{what} is not installed (peer check: `make {target}`)")
