"""``--plot``: demand (as replicas needed) against each policy's ready replicas, with a zoom on the worst interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scalewise.backtest.run import HPA, ORACLE, WORKLOAD, Backtest

MAX_POINTS = 4000
COLOURS = {ORACLE: "tab:green", HPA: "tab:orange", WORKLOAD: "tab:blue"}


def _bucket_max(values: np.ndarray, width: int) -> np.ndarray:
    """Max over buckets of ``width`` cells, so peaks survive the down-sampling."""
    if width <= 1:
        return values
    pad = (-len(values)) % width
    padded = np.concatenate((values, np.full(pad, values[-1])))
    return padded.reshape(-1, width).max(axis=1)


def worst_interval(result: Backtest, name: str, span_cells: int) -> tuple[int, int]:
    """The ``span_cells`` long window in which ``name`` left the most demand unserved."""
    run = result.runs[name]
    grid = result.grid
    short = np.maximum(grid.rate - run.ready * result.model.capacity, 0.0)
    if span_cells >= len(short):
        return 0, len(short)
    csum = np.concatenate(([0.0], np.cumsum(short)))
    start = int(np.argmax(csum[span_cells:] - csum[:-span_cells]))
    return start, start + span_cells


def draw(result: Backtest, path: str | Path) -> Path:
    """Write a PNG: the whole trace (top) and the worst interval of the workload's policy (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = result.grid
    hours = np.arange(grid.cells) * grid.step_s / 3600
    span = int(min(6 * 3600, max(600.0, grid.cells * grid.step_s / 20)) // grid.step_s)
    focus = WORKLOAD if WORKLOAD in result.runs else next(iter(result.runs))
    lo, hi = worst_interval(result, focus, max(span, 1))
    fig, (top, zoom) = plt.subplots(2, 1, figsize=(13, 8.5), constrained_layout=True)
    width = max(1, grid.cells // MAX_POINTS)
    x = hours[::width][: len(_bucket_max(grid.need, width))]
    top.fill_between(x, _bucket_max(grid.need, width), step="post", color="0.82", label="need (demand / capacity)")
    for name, run in result.runs.items():
        top.step(x, _bucket_max(run.ready, width), where="post", lw=0.8, color=COLOURS.get(name), label=f"{name} ready")
    top.axvspan(hours[lo], hours[hi - 1], color="red", alpha=0.12, label=f"worst interval ({focus})")
    top.set_title(f"{result.trace.name}: need vs ready replicas (bucket max over {width * grid.step_s:g}s)")
    top.set_xlabel("hours")
    top.set_ylabel("replicas")
    top.legend(loc="upper right", fontsize=8)
    zx = hours[lo:hi] * 60
    zoom.fill_between(zx, grid.need[lo:hi], step="post", color="0.82", label="need")
    for name, run in result.runs.items():
        colour = COLOURS.get(name)
        zoom.step(zx, run.ready[lo:hi], where="post", lw=1.2, color=colour, label=f"{name} ready")
        zoom.step(zx, run.provisioned[lo:hi], where="post", lw=0.8, ls="--", color=colour, label=f"{name} provisioned")
    zoom.set_title(f"worst interval for {focus}: most unserved requests in {span * grid.step_s / 60:g} minutes")
    zoom.set_xlabel("minutes")
    zoom.set_ylabel("replicas")
    zoom.legend(loc="upper right", fontsize=8, ncol=2)
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
