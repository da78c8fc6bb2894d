"""Killing a process tree the hard way (SIGKILL), as a crash or an OOM kill would; waiting on a condition
with a deadline, showing a process log's tail on timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (a served run is a child process of the runner)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, log: Path | None = None) -> Any:
    """Poll ``check`` every 0.5 s until it returns something truthy (returned); past ``timeout_s`` fail
    with ``what`` and the tail of ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail}")


def wait_until(check: Callable[[], Any], what: str, timeout_s: float, logs: Callable[[], str] = str) -> Any:
    """Poll ``check`` every 0.5 s until it returns something truthy (returned); past ``timeout_s`` fail
    with ``what``, the last value and ``logs()`` (for logs gathered from several places)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})\n{logs()}")
