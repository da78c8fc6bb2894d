"""The engine adapter's crash reconciler: finish or roll back an interrupted update, repair the count.

Run with the workload's lock held, before every write and by ``wait_converged`` (see "Rolling updates
and crash recovery" in the package). Every repair is absolute, so it is safe to repeat.
"""

from __future__ import annotations

from scalewise.errors import NotFoundError
from scalewise.model import Revision
from scalewise.orchestrators.engine.containers import Containers
from scalewise.orchestrators.engine.labels import LABEL_REVISIONS, LABEL_SPEC_HASH, Group, Record, template_hash
from scalewise.orchestrators.history import parse_history
from scalewise.spec import WorkloadSpec


def converge_count(c: Containers, spec: WorkloadSpec, group: Group, rec: Record) -> bool:
    """Make the committed revision's container count equal ``desired``. True if it wrote."""
    current = [b for b in group.replicas if b.revision == rec.revision]
    wrote = False
    for box in current:
        if box.state in ("created", "exited"):
            c.start(spec.name, box)
            wrote = True
    dead = [b for b in current if b.state in ("dead", "removing")]
    if dead:
        c.remove_many(spec.name, dead, grace_s=0)
        current = [b for b in current if b not in dead]
        wrote = True
    if len(current) < rec.desired:
        for slot in c.free_slots(group, rec.desired - len(current)):
            c.create_replica(
                spec,
                image=rec.image,
                revision=rec.revision,
                slot=slot,
                desired=rec.desired,
                history=rec.history,
                spec_hash=rec.spec_hash or template_hash(spec),
            )
        wrote = True
    elif len(current) > rec.desired:
        # Scale in: not-ready first, then the newest (highest slot, latest created).
        victims = sorted(current, key=lambda b: (b.ready, -b.slot, -b.created))
        c.remove_many(spec.name, victims[: len(current) - rec.desired], spec.stop_grace_period)
        wrote = True
    return wrote


def reconcile(c: Containers, spec: WorkloadSpec) -> str:
    """Finish or roll back an interrupted update, then converge the count (lock held).

    Returns ``""`` when nothing had to be repaired, ``"finished"`` or ``"rolled_back"`` when
    leftovers of an interrupted update were resolved, ``"repaired"`` for count repairs.
    """
    group = c.group(spec.name)
    if group.empty:
        raise NotFoundError(f"docker workload {spec.name!r}: no containers of it exist")
    rec = group.record()
    outcome = ""
    newer = [b for b in group.replicas if b.revision > rec.revision]
    if newer:
        newest_rev = max(b.revision for b in newer)
        candidates = [b for b in newer if b.revision == newest_rev]
        if len(candidates) == rec.desired and all(b.ready for b in candidates):
            others = [b for b in group.replicas if b.revision != newest_rev]
            c.remove_many(spec.name, others, spec.stop_grace_period)
            sample = max(candidates, key=lambda b: b.created)
            history = parse_history(sample.labels.get(LABEL_REVISIONS)) or [
                *rec.history,
                Revision(number=newest_rev, image=sample.image),
            ]
            c.new_anchor(
                spec,
                group,
                desired=rec.desired,
                revision=newest_rev,
                image=sample.image,
                history=history,
                spec_hash=sample.labels.get(LABEL_SPEC_HASH, ""),
                update_state="completed",
                message=f"finished an interrupted update to revision {newest_rev}",
            )
            outcome = "finished"
        else:
            c.remove_many(spec.name, newer, grace_s=0)
            c.rewrite_record(
                spec,
                group,
                rec,
                update_state="rollback_completed",
                message=(
                    f"rolled back an interrupted update to revision {newest_rev}"
                    f" ({len(candidates)} new containers, {sum(b.ready for b in candidates)} ready,"
                    f" {rec.desired} desired)"
                ),
            )
            outcome = "rolled_back"
        group = c.group(spec.name)
        rec = group.record()
    older = [b for b in group.replicas if b.revision < rec.revision]
    if older:
        c.remove_many(spec.name, older, spec.stop_grace_period)
        group = c.group(spec.name)
        outcome = outcome or "repaired"
    if group.anchor is None:
        c.rewrite_record(spec, group, rec)
        group = c.group(spec.name)
        outcome = outcome or "repaired"
    elif len(group.anchors) > 1:
        c.remove_many(spec.name, group.anchors[1:], grace_s=0)
        group = c.group(spec.name)
    if converge_count(c, spec, group, group.record()):
        outcome = outcome or "repaired"
    return outcome


__all__ = ["converge_count", "reconcile"]
