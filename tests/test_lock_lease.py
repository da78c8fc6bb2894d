"""The workload lock: a live holder keeps it as long as it lives (past Prefect's 60 s lease and the
15 s marker staleness), a SIGKILLed holder loses it well before its lease would expire.
A real Prefect server; the holders are a thread and a separate process."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from scalewise.errors import LockUnavailable
from scalewise.local import LocalServer
from tasks.locking import LEASE_S, STALE_S, _read_marker, workload_lock
from tests.support.docker_env import unique_name
from tests.support.prefect_env import ROOT

pytestmark = pytest.mark.prefect

HOLDER = """
import sys, time
sys.path[:0] = ["src", "."]
from tasks.locking import workload_lock
with workload_lock(sys.argv[1], timeout_s=60):
    print("held", flush=True)
    time.sleep(3600)
"""


def test_a_live_holder_keeps_the_lock_past_its_lease(prefect_server: LocalServer) -> None:
    name = unique_name("lock")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with workload_lock(name):
            held.set()
            release.wait(300)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(hold,), daemon=True)
    thread.start()
    try:
        assert held.wait(60)
        # waits longer than the lease and the staleness window: the holder beats, so never taken over
        with pytest.raises(LockUnavailable, match="holds its lock"), workload_lock(name, timeout_s=LEASE_S + STALE_S):
            pass
        marker, _ = _read_marker(name)
        assert marker is not None and marker["beat"] >= 3
    finally:
        release.set()
        thread.join(timeout=60)
    with workload_lock(name, timeout_s=30):  # released at once when the holder leaves
        pass
    assert _read_marker(name) == (None, None)


def test_a_killed_holder_loses_the_lock_before_its_lease_expires(prefect_server: LocalServer) -> None:
    name = unique_name("lock")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, name], cwd=ROOT, env=dict(os.environ, PREFECT_API_URL=prefect_server.api_url),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        # a timeout below Prefect's 60 s lease: only the takeover can get it in time
        with workload_lock(name, timeout_s=LEASE_S - 15):
            waited = time.monotonic() - killed
        print(f"lock taken over {waited:.1f}s after the holder was killed")  # a figure, not an assertion
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
