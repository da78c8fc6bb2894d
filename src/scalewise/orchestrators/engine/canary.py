"""The engine adapter's canary: containers of a new revision beside the stable replicas (lock held).

Canary containers carry the stable's labels (``scalewise.workload``, the spec's own labels) and run on
the same network, so whatever finds the workload by its labels (a load balancer, Prometheus' Docker
discovery) finds them too; ``scalewise.role=canary`` marks them, so the group's record, counts and
version token, the reconciler and the CPU source never count them as stable replicas. Each carries
the canary's whole rendered spec (``scalewise.canary-template``) and its hash, so a promote or an
abort started by another process (``scalewise promote``) knows what runs.
"""

from __future__ import annotations

import time

from scalewise.errors import CanaryFailed, PermanentError
from scalewise.model import CanaryState
from scalewise.orchestrators.engine.containers import Containers
from scalewise.orchestrators.engine.labels import (
    LABEL_CANARY_HASH,
    LABEL_CANARY_TEMPLATE,
    LABEL_CANARY_WEIGHT,
    ROLE_CANARY,
    Box,
    Group,
    _int,
    template_hash,
)
from scalewise.orchestrators.engine.rollout import RolloutError, await_healthy, rolling_update
from scalewise.orchestrators.history import canary_spec, dump_template, parse_template
from scalewise.policy.canary import canary_replicas
from scalewise.revisions import render_template
from scalewise.revisions import template_hash as revision_hash
from scalewise.spec import WorkloadSpec


def _live(group: Group) -> list[Box]:
    return [b for b in group.canaries if b.state not in ("removing", "dead")]


def read(group: Group) -> CanaryState | None:
    """The canary of ``group`` (from its newest container's labels), ``None`` without one."""
    live = _live(group)
    if not live:
        return None
    newest = max(live, key=lambda b: b.created)
    template = parse_template(newest.labels.get(LABEL_CANARY_TEMPLATE))
    return CanaryState(
        name=group.name,
        image=newest.image,
        weight=min(100, max(0, _int(newest.labels.get(LABEL_CANARY_WEIGHT), 0))),
        desired_replicas=len(live),
        ready_replicas=sum(1 for b in live if b.ready),
        spec_hash=newest.labels.get(LABEL_CANARY_HASH) or None,
        template=template,
    )


def set_weight(c: Containers, spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> None:
    """Size the canary to ``weight`` percent of the stable's desired count and wait until it is ready;
    a canary that never becomes ready raises CanaryFailed (its containers stay for the abort)."""
    group = c.group(spec.name)
    rec = group.record()
    template = render_template(canary)
    thash = revision_hash(template)
    live = _live(group)
    running = {b.image for b in live if b.labels.get(LABEL_CANARY_HASH) != thash}
    if running:
        raise PermanentError(
            f"docker workload {spec.name!r}: a canary of {', '.join(sorted(running))} is running;"
            " promote or abort it first"
        )
    want = canary_replicas(weight, rec.desired)
    c.ensure_image(spec.name, canary.image)
    stopped = [b for b in live if b.state in ("created", "exited")]
    for box in stopped:
        c.start(spec.name, box)
    new_ids: list[str] = []
    for slot in c.free_slots(group, max(0, want - len(live)), canary=True):
        new_ids.append(
            c.create_replica(
                canary,
                image=canary.image,
                revision=rec.revision,
                slot=slot,
                desired=rec.desired,
                history=rec.history,
                spec_hash=template_hash(canary),
                role=ROLE_CANARY,
                extra_labels={
                    LABEL_CANARY_WEIGHT: str(weight),
                    LABEL_CANARY_HASH: thash,
                    LABEL_CANARY_TEMPLATE: dump_template(template),
                },
            )
        )
    if len(live) > want:  # a lower weight: the highest slots go
        extra = sorted(live, key=lambda b: (b.ready, -b.slot))[: len(live) - want]
        c.remove_many(spec.name, extra, canary.stop_grace_period)
    waiting = [*new_ids, *(b.id for b in live if not b.ready and b.id not in new_ids)]
    try:
        await_healthy(c, canary, waiting, time.monotonic() + canary.update.timeout)
    except RolloutError as exc:
        raise CanaryFailed(spec.name, f"{canary.image}: {exc}") from None


def promote(c: Containers, spec: WorkloadSpec) -> None:
    """Roll the stable to the canary's spec (start-first batches, as any rolling update), then remove
    the canary. Repeatable: a stable already on the canary's spec only loses the canary."""
    group = c.group(spec.name)
    state = read(group)
    if state is None:
        raise PermanentError(f"docker workload {spec.name!r}: no canary to promote")
    if state.template is None:
        raise PermanentError(f"docker workload {spec.name!r}: the canary's containers carry no spec; abort it")
    target = canary_spec(spec, state)
    rec = group.record()
    if rec.image != target.image or rec.spec_hash != template_hash(target):
        rolling_update(c, target, target.image, "promote")
    abort(c, spec)


def abort(c: Containers, spec: WorkloadSpec) -> None:
    """Remove every canary container; the stable replicas are not touched."""
    group = c.group(spec.name)
    c.remove_many(spec.name, group.canaries, min(spec.stop_grace_period, 10.0))


__all__ = ["abort", "canary_spec", "promote", "read", "set_weight"]
