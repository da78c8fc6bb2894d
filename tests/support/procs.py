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


#: A wait's ``timeout_s`` is what the awaited work needs on a machine with a core to spare. When more
#: tasks want to run than there are cores (``os.getloadavg()``), each wall second gives the work only
#: cores/load of a second, so the budget is spent at that rate: a wait stretches with the machine's
#: load, up to ``MAX_STRETCH`` times its timeout (it stays bounded).
MAX_STRETCH = 4.0


class Deadline:
    """A load-stretched deadline (see ``MAX_STRETCH``): ``expired()`` once ``timeout_s`` of budget is spent."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.started = self._last = time.monotonic()
        self.spent = 0.0
        self.peak_load = 0.0

    def expired(self) -> bool:
        now = time.monotonic()
        load = os.getloadavg()[0]
        self.peak_load = max(self.peak_load, load)
        share = min(1.0, (os.cpu_count() or 1) / load) if load > 0 else 1.0
        self.spent += (now - self._last) * max(share, 1.0 / MAX_STRETCH)
        self._last = now
        return self.spent >= self.timeout_s

    def describe(self) -> str:
        wall = time.monotonic() - self.started
        return f"{wall:.0f}s (budget {self.timeout_s:.0f}s, peak load {self.peak_load:.1f})"


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, log: Path | None = None) -> Any:
    """Poll ``check`` every 0.5 s until it returns something truthy (returned); past the load-stretched
    ``timeout_s`` fail with ``what`` and the tail of ``log``."""
    deadline = Deadline(timeout_s)
    while not deadline.expired():
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {deadline.describe()} waiting for {what}\n{tail}")


def wait_until(check: Callable[[], Any], what: str, timeout_s: float, logs: Callable[[], str] = str) -> Any:
    """Poll ``check`` every 0.5 s until it returns something truthy (returned); past the load-stretched
    ``timeout_s`` fail with ``what``, the last value and ``logs()`` (for logs gathered from several
    places)."""
    deadline = Deadline(timeout_s)
    last: Any = None
    while not deadline.expired():
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {deadline.describe()} waiting for {what} (last: {last!r})\n{logs()}")
