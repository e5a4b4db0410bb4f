"""A test that fails between starting a worker and stopping it must not leave the worker
consuming the shared Redis database of the tests that follow."""
from __future__ import annotations

import os
import signal

import pytest

# imported at collection, like every test module: importing tests.conftest later (inside a
# fixture) would run it again and point SPEEDBOOK_DATA at a fresh, unmigrated directory
from tests.jobs.test_worker_integration import STARTED


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
