"""Revisions and rollback plans, for every target. Pure: no SDK, no Prefect, no I/O.

A revision is the whole rendered spec a workload ran with (:func:`render_template`: image,
command, env, ports, labels, health check, update settings, stop grace period; everything a
target renders from a :class:`WorkloadSpec` except the replica count and where it runs) plus its
hash. Numbering is written once, here (:func:`record_revision`): a write whose template differs
from the current revision's becomes revision ``max + 1``; a rollback is such a write too (like
``kubectl rollout undo``, it gets a new number).

:func:`plan_rollback` is the one rule that chooses a rollback's target. The flow computes the plan
once, records it, and the adapter executes exactly that plan (``apply_rollback(spec, plan)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from scalewise.errors import PermanentError
from scalewise.model import Revision, WorkloadState
from scalewise.spec import WorkloadSpec

#: The WorkloadSpec fields a revision records (and a rollback restores).
TEMPLATE_FIELDS = ("image", "command", "env", "ports", "labels", "healthcheck", "update", "stop_grace_period")
MAX_REVISIONS = 20


def render_template(spec: WorkloadSpec) -> dict[str, Any]:
    """The part of ``spec`` a revision records, as plain JSON data."""
    data: dict[str, Any] = spec.model_dump(mode="json", include=set(TEMPLATE_FIELDS))
    return data


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


def spec_revision(spec: WorkloadSpec, number: int, now: datetime | None = None) -> Revision:
    """``spec`` as revision ``number``."""
    template = render_template(spec)
    return Revision(
        number=number, image=spec.image, created_at=now, spec_hash=template_hash(template), template=template
    )


def restore(spec: WorkloadSpec, revision: Revision) -> WorkloadSpec:
    """``spec`` with everything ``revision`` recorded put back (only the image for old entries)."""
    if revision.template is None:
        return spec.with_image(revision.image)
    return WorkloadSpec.model_validate({**spec.model_dump(mode="json"), **revision.template})


def same_spec(a: Revision, b: Revision) -> bool:
    """Whether two revisions render the same spec (by image when either recorded only its image)."""
    if a.spec_hash and b.spec_hash and a.template is not None and b.template is not None:
        return a.spec_hash == b.spec_hash
    return a.image == b.image


def record_revision(
    history: Sequence[Revision], spec: WorkloadSpec, now: datetime, at_least: int = 0, force_new: bool = False
) -> tuple[list[Revision], int]:
    """The one numbering rule: (new history, current number) after writing ``spec``.

    Unchanged when ``spec`` renders the same as the newest entry (unless ``force_new``); else a new
    entry numbered above every known number (and ``at_least``), keeping the newest
    :data:`MAX_REVISIONS`.
    """
    entries = list(history)
    new = spec_revision(spec, 1, now)
    if force_new:
        pass
    elif entries and entries[-1].template is not None and same_spec(entries[-1], new):
        return entries, entries[-1].number
    elif entries and entries[-1].template is None and entries[-1].image == spec.image:
        # An image-only entry of the same image: it now learns its whole spec.
        entries[-1] = new.model_copy(update={"number": entries[-1].number, "created_at": entries[-1].created_at})
        return entries, entries[-1].number
    number = max([r.number for r in entries] + [at_least, 0]) + 1
    entries.append(new.model_copy(update={"number": number}))
    return entries[-MAX_REVISIONS:], number


class RollbackPlan(BaseModel):
    """What a rollback does: from the current revision to ``target``, with the fields it changes."""

    model_config = ConfigDict(frozen=True)

    workload: str
    from_revision: int
    from_image: str
    target: Revision
    changes: list[str]

    @property
    def to_revision(self) -> int:
        return self.target.number

    def describe(self) -> list[str]:
        head = (
            f"roll back from revision {self.from_revision} ({self.from_image})"
            f" to {self.target.number} ({self.target.image})"
        )
        return [head, *(f"  {c}" for c in self.changes)]


def _changes(current: Revision, target: Revision) -> list[str]:
    if current.template is None or target.template is None:
        note = "" if target.template is not None else " (this revision recorded only its image)"
        return [f"image: {current.image} -> {target.image}{note}"]
    out = []
    for key in TEMPLATE_FIELDS:
        old, new = current.template.get(key), target.template.get(key)
        if old != new:
            out.append(f"{key}: {json.dumps(old, sort_keys=True)} -> {json.dumps(new, sort_keys=True)}")
    return out


def plan_rollback(state: WorkloadState, revisions: Sequence[Revision], to_revision: int | None) -> RollbackPlan:
    """The rollback of ``state``: to ``to_revision``, or by default to the newest earlier revision
    whose rendered spec differs from the current one. Raises :class:`PermanentError` with the reason
    when there is no such revision or when the rollback could not change anything."""
    name = state.name
    known = ", ".join(f"{r.number} ({r.image})" for r in revisions) or "none"
    current = next((r for r in revisions if r.number == state.revision), None)
    if current is None:
        current = Revision(number=state.revision, image=state.image)
    if to_revision is None:
        older = [r for r in revisions if r.number < current.number and not same_spec(r, current)]
        if not older:
            raise PermanentError(
                f"{name}: nothing to roll back to: no revision before the current {current.number}"
                f" renders a different spec (known: {known})"
            )
        target = older[-1]
    else:
        found = next((r for r in revisions if r.number == to_revision), None)
        if found is None:
            raise PermanentError(f"{name}: unknown revision {to_revision} (known: {known})")
        if same_spec(found, current):
            raise PermanentError(
                f"{name}: revision {to_revision} renders the same spec as the current revision"
                f" {current.number}; a rollback would change nothing"
            )
        target = found
    return RollbackPlan(
        workload=name,
        from_revision=current.number,
        from_image=state.image,
        target=target,
        changes=_changes(current, target),
    )


__all__ = [
    "MAX_REVISIONS",
    "TEMPLATE_FIELDS",
    "RollbackPlan",
    "plan_rollback",
    "record_revision",
    "render_template",
    "restore",
    "same_spec",
    "spec_revision",
    "template_hash",
]
