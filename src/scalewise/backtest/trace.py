"""Demand traces: ``timestamp_s,requests`` CSV files, or a Prometheus range query over a past window.

A trace is a sequence of contiguous intervals of one fixed length; ``requests[i]`` is the number of
requests that arrived in ``[t0 + i*interval, t0 + (i+1)*interval)``. Loading validates every row and
names the file, the line and the field of the first bad one, so nothing runs on a half-read trace.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from scalewise.errors import SpecError

HEADER = ("timestamp_s", "requests")
#: Intervals are compared and the simulation grid is built in milliseconds.
RESOLUTION_MS = 1


class TraceError(SpecError):
    """A trace file or range query is unusable; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Trace:
    """``requests[i]`` arrived in interval ``i`` (length ``interval_s``) starting at ``start_s``."""

    name: str
    interval_s: float
    requests: npt.NDArray[np.float64]
    start_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.interval_s * len(self.requests)

    @property
    def rate(self) -> npt.NDArray[np.float64]:
        """Requests per second in each interval."""
        return self.requests / self.interval_s

    def summary(self) -> dict[str, Any]:
        rate = self.rate
        return {
            "name": self.name,
            "interval_s": self.interval_s,
            "points": len(self.requests),
            "duration_h": round(self.duration_s / 3600, 3),
            "requests": float(self.requests.sum()),
            "rate_mean": round(float(rate.mean()), 6),
            "rate_max": round(float(rate.max()), 6),
            "notes": list(self.notes),
        }


def _number(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(where, column, f"{text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(where, column, f"{text.strip()!r} is not a finite number")
    return value


def load_csv(path: str | Path) -> Trace:
    """Read a ``timestamp_s,requests`` CSV (any fixed interval; rows contiguous and increasing)."""
    file = Path(path)
    try:
        handle = file.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(str(file), "", f"cannot read: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"{file} line 1", "", f"not a CSV file: {exc}") from None
        if header is None:
            raise TraceError(str(file), "", "empty file (expected the header 'timestamp_s,requests')")
        if tuple(h.strip() for h in header) != HEADER:
            raise TraceError(f"{file} line 1", "header", f"expected 'timestamp_s,requests', got {','.join(header)!r}")
        stamps: list[float] = []
        counts: list[float] = []
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                where = f"{file} line {line}"
                if len(row) != 2:
                    raise TraceError(where, "", f"expected 2 fields (timestamp_s,requests), got {len(row)}")
                stamp = _number(row[0], where, "timestamp_s")
                count = _number(row[1], where, "requests")
                if count < 0:
                    raise TraceError(where, "requests", f"{count:g} is negative")
                if stamps:
                    step = stamp - stamps[-1]
                    if step <= 0:
                        raise TraceError(
                            where, "timestamp_s", f"{stamp:g} is not after the previous row ({stamps[-1]:g})"
                        )
                    if len(stamps) >= 2 and abs(step - (stamps[1] - stamps[0])) > 1e-6 * max(1.0, step):
                        raise TraceError(
                            where, "timestamp_s",
                            f"interval {step:g}s differs from the trace's interval {stamps[1] - stamps[0]:g}s "
                            "(rows must be contiguous; write 0 for an empty interval)",
                        )
                stamps.append(stamp)
                counts.append(count)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"{file} line {reader.line_num}", "", f"not a CSV file: {exc}") from None
    if len(stamps) < 2:
        raise TraceError(str(file), "", f"needs at least 2 rows to know its interval, got {len(stamps)}")
    interval = stamps[1] - stamps[0]
    _check_interval(interval, str(file), "timestamp_s")
    return Trace(file.name, interval, np.asarray(counts, dtype=np.float64), start_s=stamps[0])


def _check_interval(interval: float, where: str, what: str) -> None:
    if round(interval * 1000) / 1000 != round(interval, 9) or interval < 0.001:
        raise TraceError(where, what, f"interval {interval:g}s must be a whole number of milliseconds")


class RangeQuerier(Protocol):
    def query_range(self, promql: str, start: datetime, end: datetime, step_s: float) -> Any: ...


def from_prometheus(source: RangeQuerier, query: str, start: datetime, end: datetime, step_s: float) -> Trace:
    """A trace from a range query returning requests/s (e.g. ``sum(rate(http_requests_total[1m]))``).

    Each sample ``v`` at ``t`` becomes ``v * step`` requests in ``[t, t + step)``; a step with no
    sample (a scrape gap) counts as 0 requests and is reported in the trace's notes.
    """
    if end <= start:
        raise TraceError("parameter", "end", f"{end.isoformat()} is not after start {start.isoformat()}")
    if step_s <= 0:
        raise TraceError("parameter", "step", "must be positive")
    _check_interval(step_s, "parameter", "step")
    points = int((end - start).total_seconds() // step_s) + 1
    if points < 2:
        raise TraceError("parameter", "step", f"{step_s:g}s leaves fewer than 2 points between start and end")
    result = source.query_range(query, start, end, step_s)
    if not isinstance(result, list):
        raise TraceError("parameter", "prometheus-query", f"unexpected answer type {type(result).__name__}")
    if not result:
        raise TraceError("parameter", "prometheus-query", "the query returned no series in that window")
    if len(result) > 1:
        raise TraceError(
            "parameter", "prometheus-query",
            f"the query returned {len(result)} series; aggregate it to one (e.g. sum(...))",
        )
    values = np.zeros(points, dtype=np.float64)
    seen = np.zeros(points, dtype=bool)
    t0 = start.timestamp()
    for ts, raw in result[0].get("values", []):
        index = round((float(ts) - t0) / step_s)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise TraceError("parameter", "prometheus-query", f"not a number at {ts}: {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise TraceError("parameter", "prometheus-query", f"{raw} at {ts} is not a finite request rate >= 0")
        if 0 <= index < points:
            values[index] = value * step_s
            seen[index] = True
    notes = []
    gaps = int(points - seen.sum())
    if gaps:
        notes.append(f"{gaps} of {points} steps had no sample and count as 0 requests")
    return Trace(f"prometheus:{query}", float(step_s), values, start_s=t0, notes=notes)
