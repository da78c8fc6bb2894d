"""The body shared by scale, scale-out, scale-in and autoscale (one absolute write, bounded wait)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from flows.common import Body, begin, require_state, snapshot, timed, wait_recorded
from scalewise.audit import ActionRecord, Snapshot
from scalewise.hold import make_hold
from scalewise.operations import WriteOutcome, plan_for
from scalewise.policy.manual import ScaleMode
from scalewise.spec import WorkloadSpec
from tasks.hold import clear_hold, save_hold
from tasks.workload import apply_scale


def apply_and_wait(
    spec: WorkloadSpec,
    record: ActionRecord,
    mode: ScaleMode,
    amount: int,
    wait: bool,
    timeout_s: float,
    on_written: Callable[[], None] | None = None,
) -> WriteOutcome:
    """The write (absolute, re-decided on stale versions) and the bounded wait, recorded on ``record``.

    ``on_written`` runs once the write is accepted, before waiting.
    """
    begin(record, [f"scale {mode} {amount}" if mode != "absolute" else f"set replicas to {amount}"])
    t0 = time.monotonic()
    out = apply_scale(spec, mode, amount)
    timed(record, "write_s", t0)
    if on_written is not None:
        on_written()
    record.before, record.after = snapshot(out.before), snapshot(out.after)
    record.plan.extend(out.plan)
    if out.conflicts:
        record.plan.append(f"re-decided after {out.conflicts} stale write(s)")
    if not out.changed:
        record.outcome = "noop"
    if wait:
        wait_recorded(
            spec,
            record,
            timeout_s,
            lambda r: (
                f"{spec.name} did not reach {r.state.desired_replicas} ready replicas in "
                f"{timeout_s:.0f}s ({r.reason}: {r.detail})"
            ),
        )
    return out


def hold_seconds(spec: WorkloadSpec, hold_s: float | None) -> float:
    """How long a manual scale pins the count: ``hold_s``, else the spec's ``autoscaling.manual_hold``;
    0 when the workload is not autoscaled (nothing to hold against)."""
    if spec.autoscaling is None:
        return 0.0
    return spec.autoscaling.manual_hold if hold_s is None else hold_s


def _hold(spec: WorkloadSpec, record: ActionRecord, replicas: int, hold_s: float | None) -> None:
    """Pin (or release) the count after a manual scale and say so in the record."""
    if spec.autoscaling is None:
        return
    seconds = hold_seconds(spec, hold_s)
    now = datetime.now(UTC)
    if seconds <= 0:
        if not record.dry_run:
            clear_hold(spec.name)
        record.plan.append(f"no manual hold: the autoscaler may change {spec.name} at its next evaluation")
        return
    hold = make_hold(replicas, seconds, now, by=record.trigger.label(), operation=record.operation, action_id=record.id)
    if record.dry_run:
        record.plan.append(f"would pin: {hold.sentence(spec.name)} (manual hold {seconds:g}s)")
        return
    save_hold(spec.name, hold)
    record.plan.append(f"{hold.sentence(spec.name)} (manual hold {seconds:g}s; --hold 0 lets it act at once)")


def scale_body(mode: ScaleMode, amount: int, wait: bool, timeout_s: float, hold_s: float | None = None) -> Body:
    """A manual scale; on an autoscaled workload it pins the count for the hold time (scalewise.hold)."""

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        state = require_state(spec)
        record.before = snapshot(state)
        if record.dry_run:
            plan = plan_for(spec, state, mode, amount)
            record.reason_code = plan.reason_code
            record.plan = [f"would set replicas {plan.current} -> {plan.target} ({plan.reason_code})"]
            record.after = Snapshot(replicas=plan.target, image=state.image, revision=state.revision)
            _hold(spec, record, plan.target, hold_s)
            return
        out = apply_and_wait(spec, record, mode, amount, wait, timeout_s)
        record.reason_code = out.reason_code
        _hold(spec, record, out.after.desired_replicas, hold_s)

    return body
