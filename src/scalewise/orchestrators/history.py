"""Revision history that scalewise keeps itself, for targets that keep none (or too little).

Format: compact JSON list of ``{"n": int, "image": str, "at": iso-time, "h": spec hash}``, newest
last, capped at :data:`MAX_REVISIONS` entries; ``at`` and ``h`` are optional. The adapters store it
in a label (Swarm service, Docker containers) or an annotation. No SDK is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from scalewise.errors import PermanentError
from scalewise.model import Revision

MAX_REVISIONS = 20


def parse_history(raw: str | None) -> list[Revision]:
    """The revisions encoded in ``raw``; ``[]`` when it is missing or malformed (callers pick a fallback)."""
    result: list[Revision] = []
    if not raw:
        return result
    try:
        for entry in json.loads(raw):
            at = entry.get("at")
            result.append(
                Revision(
                    number=int(entry["n"]),
                    image=str(entry["image"]),
                    created_at=datetime.fromisoformat(at) if at else None,
                    spec_hash=entry.get("h"),
                )
            )
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
    return result


def dump_history(history: Sequence[Revision]) -> str:
    """The newest :data:`MAX_REVISIONS` of ``history`` as compact JSON."""
    entries = []
    for rev in history[-MAX_REVISIONS:]:
        entry: dict[str, Any] = {"n": rev.number, "image": rev.image}
        if rev.created_at is not None:
            entry["at"] = rev.created_at.isoformat(timespec="seconds")
        if rev.spec_hash:
            entry["h"] = rev.spec_hash
        entries.append(entry)
    return json.dumps(entries, separators=(",", ":"))


def append_revision(history: list[Revision], image: str, spec_hash: str | None = None) -> int:
    """Append a new revision of ``image`` (number: highest known + 1, created now); its number."""
    number = max(r.number for r in history) + 1
    history.append(Revision(number=number, image=image, created_at=datetime.now(UTC), spec_hash=spec_hash))
    return number


def rollback_target(history: Sequence[Revision], current: int, to_revision: int | None, subject: str) -> Revision:
    """The revision a rollback goes to: ``to_revision``, or else the newest one before ``current``.

    Raises :class:`PermanentError` (prefixed with ``subject``) when there is no such revision.
    """
    if to_revision is None:
        earlier = [r for r in history if r.number < current]
        if not earlier:
            raise PermanentError(
                f"{subject}: no earlier revision to roll back to (known: {', '.join(str(r.number) for r in history)})"
            )
        return earlier[-1]
    found = [r for r in history if r.number == to_revision]
    if not found:
        known = ", ".join(f"{r.number} ({r.image})" for r in history)
        raise PermanentError(f"{subject}: unknown revision {to_revision} (known: {known})")
    return found[0]


__all__ = ["MAX_REVISIONS", "append_revision", "dump_history", "parse_history", "rollback_target"]
