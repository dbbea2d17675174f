"""Suite-wide guards."""

import os

import pytest


@pytest.fixture(autouse=True)
def _ordinary_thread_scheduling():
    """Fail the test that leaves the main thread with a real-time scheduling policy.

    SVT-AV1 run as root switches its caller to SCHED_FIFO 99 (`vlaforge.data.video.keep_thread_scheduling`
    undoes it); every thread created afterwards would inherit it, and on a 2-core machine spinning
    real-time threads livelock the rest of the suite (seen as a CI run that hung in a server test).
    """
    yield
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # keep the tests after this one sane
        pytest.fail(
            "the test left the main thread with a real-time scheduling policy (see tests/conftest.py)"
        )
