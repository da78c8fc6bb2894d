"""The engine adapter's rollout engine: replace a revision's containers batch by batch, each batch
a step (:func:`scalewise.steps.run_step`: inline, or a task run of its own under Prefect).

Start-first batches (stop-first when asked or when host ports are published), each new container
awaited healthy, the whole rollout bounded by ``update.timeout``; a failure undoes it and raises
:class:`RolloutFailed` (see "Rolling updates and crash recovery" in the package). The lock is held
by the caller.
"""

from __future__ import annotations

import contextlib
import functools
import time
from datetime import UTC, datetime

from scalewise.errors import NotFoundError, RolloutFailed, TransientError
from scalewise.orchestrators.engine.containers import Containers, mapped
from scalewise.orchestrators.engine.labels import Box, Record, template_hash
from scalewise.revisions import record_revision
from scalewise.spec import WorkloadSpec
from scalewise.steps import run_step

POLL_S = 0.25


class RolloutError(Exception):
    """Internal: a new container of a rolling update did not become healthy."""


def await_healthy(c: Containers, spec: WorkloadSpec, ids: list[str], deadline: float) -> None:
    """Wait until every container is healthy (or running for update.monitor without a check)."""
    pending = set(ids)
    running_since: dict[str, float] = {}
    while pending:
        for cid in sorted(pending):
            what = f"docker workload {spec.name!r}: inspect new container"
            try:
                with mapped(what):
                    info = c.api.inspect_container(cid)
            except NotFoundError:
                raise RolloutError(f"new container {cid[:12]} disappeared") from None
            except TransientError:
                continue  # the engine blinked: absorbed until this wait's own deadline
            name = str(info.get("Name", cid[:12])).lstrip("/")
            st = info.get("State") or {}
            status = st.get("Status")
            if status in ("exited", "dead") or int(info.get("RestartCount") or 0) > 0 or st.get("Restarting"):
                raise RolloutError(
                    f"new container {name} exited (exit code {st.get('ExitCode')}) {st.get('Error') or ''}".strip()
                )
            health = st.get("Health")
            if health:
                hstatus = health.get("Status")
                if hstatus == "healthy":
                    pending.discard(cid)
                elif hstatus == "unhealthy":
                    log = health.get("Log") or []
                    out = str(log[-1].get("Output", "")).strip()[:200] if log else ""
                    detail = f": {out}" if out else ""
                    raise RolloutError(f"new container {name} is unhealthy{detail}")
            elif status == "running":
                first = running_since.setdefault(cid, time.monotonic())
                if time.monotonic() - first >= spec.update.monitor:
                    pending.discard(cid)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise RolloutError(
                f"timed out after {spec.update.timeout:g}s: {len(ids) - len(pending)} of {len(ids)}"
                " new containers healthy"
            )
        time.sleep(POLL_S)


def rolling_update(c: Containers, spec: WorkloadSpec, image: str, reason: str) -> None:
    """Replace the committed revision's containers by ``image`` (lock held, group reconciled)."""
    name = spec.name
    c.ensure_image(name, image)
    group = c.group(name)
    rec = group.record()
    new_hash = template_hash(spec)
    # New containers always get a new number (it names them); the history keeps the whole spec.
    history, new_rev = record_revision(
        rec.history,
        spec.with_image(image),
        datetime.now(UTC),
        at_least=max([b.revision for b in group.replicas] + [rec.revision]),
        force_new=True,
    )
    old = sorted((b for b in group.replicas if b.revision == rec.revision), key=lambda b: b.slot)
    desired = rec.desired
    stop_first = spec.update.order == "stop-first" or any(p.published for p in spec.ports)
    batch = spec.update.parallelism or max(1, len(old))
    chunks = [old[start : start + batch] for start in range(0, len(old), batch)]
    deadline = time.monotonic() + spec.update.timeout

    def roll(chunk: list[Box]) -> None:
        """One batch: start the new revision on the chunk's slots (stop-first: after removing the
        old ones), wait until healthy, remove the old ones. Safe to run again after a transient
        failure: a slot's new container that exists is reused, an old one that is gone is not
        removed twice."""
        group = c.group(name)
        fresh = {b.slot: b.id for b in group.replicas if b.revision == new_rev}
        live = {b.id for b in group.replicas}
        if stop_first:
            c.remove_many(name, [b for b in chunk if b.id in live], spec.stop_grace_period)
        new_ids = [
            fresh[box.slot]
            if box.slot in fresh
            else c.create_replica(
                spec,
                image=image,
                revision=new_rev,
                slot=box.slot,
                desired=desired,
                history=history,
                spec_hash=new_hash,
            )
            for box in chunk
        ]
        await_healthy(c, spec, new_ids, deadline)
        if not stop_first:
            c.remove_many(name, [b for b in chunk if b.id in live], spec.stop_grace_period)

    try:
        for number, chunk in enumerate(chunks, start=1):
            slots = ",".join(str(b.slot) for b in chunk)
            run_step(f"batch-{number}-of-{len(chunks)}-slots-{slots}", functools.partial(roll, chunk))
            if spec.update.delay and number < len(chunks):
                time.sleep(spec.update.delay)
    except Exception as exc:
        message = str(exc)
        live = {b.id for b in c.group(name).replicas}
        replaced = [b for b in old if b.id not in live]  # old containers already removed
        undo(c, spec, rec, new_rev, replaced)
        group = c.group(name)
        c.rewrite_record(
            spec,
            group,
            rec,
            update_state="rollback_completed",
            message=f"update to {image} (revision {new_rev}) failed: {message}",
        )
        if isinstance(exc, RolloutError):
            raise RolloutFailed(name, message, rolled_back_to=rec.revision) from None
        raise
    group = c.group(name)
    c.new_anchor(
        spec,
        group,
        desired=desired,
        revision=new_rev,
        image=image,
        history=history,
        spec_hash=new_hash,
        update_state="completed",
        message=f"{reason} to {image} completed",
    )


def undo(c: Containers, spec: WorkloadSpec, rec: Record, new_rev: int, replaced: list[Box]) -> None:
    """Remove the new revision's containers, recreating the old ones it already replaced."""
    name = spec.name
    group = c.group(name)
    new = [b for b in group.replicas if b.revision == new_rev]
    c.remove_many(name, [b for b in new if not b.ready], grace_s=0)
    restored: list[str] = []
    old_spec_hash = rec.spec_hash or template_hash(spec)
    for box in replaced:
        restored.append(
            c.create_replica(
                spec,
                image=rec.image,
                revision=rec.revision,
                slot=box.slot,
                desired=rec.desired,
                history=rec.history,
                spec_hash=old_spec_hash,
            )
        )
    if restored:
        with contextlib.suppress(RolloutError):
            await_healthy(c, spec, restored, time.monotonic() + spec.update.timeout)
    c.remove_many(name, [b for b in new if b.ready], spec.stop_grace_period)


__all__ = ["POLL_S", "RolloutError", "await_healthy", "rolling_update", "undo"]
