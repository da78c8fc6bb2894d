"""The per-workload lock survives a Prefect server restart (filesystem lease storage).

With the default in-memory lease storage, a restart forgets the lease: the holder's release finds
nothing to release and the slot stays taken forever (seen on prefect 3.9.1). scalewise's server is
started with filesystem leases, so the slot is released and the lock can be taken again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.settings import PREFECT_API_URL, temporary_settings

from scalewise.local import start_server
from tasks.locking import ensure_lock, lock_name
from tests.support.prefect_env import free_port, migrated_database


@pytest.mark.prefect
def test_held_lock_is_released_after_a_server_restart(tmp_path: Path) -> None:
    home, port = tmp_path / "prefect", free_port()
    db_home = Path(tempfile.mkdtemp(prefix="scalewise-test-pg-"))  # see tests/support/prefect_env.py
    migrated_database(db_home)
    server = start_server(home, port=port, db_home=db_home, timeout_s=600)  # minutes on a loaded machine
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            ensure_lock("restart")
            # 60 s is the server minimum; renewed every 45 s: the first renewal after the restart must find it
            lease = 60.0
            with concurrency(lock_name("restart"), occupy=1, strict=True, timeout_seconds=10, lease_duration=lease):
                taken = time.monotonic()
                time.sleep(1.0)  # the renewal thread's first renewal happens right after acquiring
                server.stop()
                server = start_server(home, port=port, db_home=db_home, timeout_s=300)
                with get_client(sync_client=True) as client:
                    held = client.read_global_concurrency_limit_by_name(lock_name("restart"))
                assert held.active_slots == 1
                # Sleep past the next renewal; with in-memory leases it fails and the holder is cancelled here.
                time.sleep(max(0.0, lease * 0.75 + 3.0 - (time.monotonic() - taken)))
            with get_client(sync_client=True) as client:
                after = client.read_global_concurrency_limit_by_name(lock_name("restart"))
            assert after.active_slots == 0
            with concurrency(lock_name("restart"), occupy=1, strict=True, timeout_seconds=10):
                pass
    finally:
        server.stop()
        server.stop_database()
        shutil.rmtree(db_home, ignore_errors=True)
