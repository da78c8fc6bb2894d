"""The per-workload host lock of the engine adapter: a ``threading.Lock`` per workload plus an ``flock``
on ``$SCALEWISE_STATE/locks/engine-<workload>.lock`` (see "Version token and locking" in the package)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from scalewise.errors import ConflictError

LOCK_TIMEOUT_S = 60.0

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _lock_dir() -> Path:
    return Path(os.environ.get("SCALEWISE_STATE", "/tmp/scalewise")) / "locks"


@contextlib.contextmanager
def workload_lock(name: str, timeout_s: float) -> Iterator[None]:
    """Per-workload lock across threads (threading.Lock) and processes on this host (flock)."""
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(name, threading.Lock())
    deadline = time.monotonic() + max(0.0, timeout_s)
    if not tlock.acquire(timeout=max(0.0, timeout_s)):
        raise ConflictError(f"docker workload {name!r}: another operation holds its lock; re-read and retry")
    try:
        directory = _lock_dir()
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f"engine-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ConflictError(
                            f"docker workload {name!r}: another scalewise process holds its lock; re-read and retry"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        tlock.release()


__all__ = ["LOCK_TIMEOUT_S", "workload_lock"]
