"""How adapters store a revision history in a label or annotation (the model: ``scalewise.revisions``).

Format: JSON list of ``{"n": int, "image": str, "at": iso-time, "h": spec hash, "t": template}``,
newest last, capped at :data:`MAX_REVISIONS` entries; ``at``, ``h`` and ``t`` are optional (entries
written before revisions kept the whole spec have no ``t``). When the JSON passes
:data:`COMPRESS_OVER` characters it is stored as ``z:`` + base64 of its zlib compression, so 20
whole specs stay well inside label and annotation size limits. No SDK is imported here.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from scalewise.model import CanaryState, Revision
from scalewise.revisions import MAX_REVISIONS, restore
from scalewise.spec import WorkloadSpec

COMPRESS_OVER = 2048
_ZPREFIX = "z:"


def _unpack(raw: str) -> str:
    if raw.startswith(_ZPREFIX):
        return zlib.decompress(base64.b64decode(raw[len(_ZPREFIX) :])).decode()
    return raw


def _pack(raw: str) -> str:
    if len(raw) > COMPRESS_OVER:
        return _ZPREFIX + base64.b64encode(zlib.compress(raw.encode(), 9)).decode()
    return raw


def dump_template(template: dict[str, Any]) -> str:
    """One revision's template for a single annotation (Kubernetes pod templates carry it)."""
    return _pack(json.dumps(template, separators=(",", ":"), sort_keys=True))


def parse_template(raw: str | None) -> dict[str, Any] | None:
    """The template :func:`dump_template` wrote; ``None`` when missing or malformed."""
    if not raw:
        return None
    try:
        data = json.loads(_unpack(raw))
    except (ValueError, TypeError, binascii.Error, zlib.error):
        return None
    return data if isinstance(data, dict) else None


def parse_history(raw: str | None) -> list[Revision]:
    """The revisions encoded in ``raw``; ``[]`` when it is missing or malformed (callers pick a fallback)."""
    result: list[Revision] = []
    if not raw:
        return result
    try:
        for entry in json.loads(_unpack(raw)):
            at = entry.get("at")
            template = entry.get("t")
            result.append(
                Revision(
                    number=int(entry["n"]),
                    image=str(entry["image"]),
                    created_at=datetime.fromisoformat(at) if at else None,
                    spec_hash=entry.get("h"),
                    template=template if isinstance(template, dict) else None,
                )
            )
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error, zlib.error):
        return []
    return result


def dump_history(history: Sequence[Revision]) -> str:
    """The newest :data:`MAX_REVISIONS` of ``history`` (compressed past :data:`COMPRESS_OVER`)."""
    entries = []
    for rev in history[-MAX_REVISIONS:]:
        entry: dict[str, Any] = {"n": rev.number, "image": rev.image}
        if rev.created_at is not None:
            entry["at"] = rev.created_at.isoformat(timespec="seconds")
        if rev.spec_hash:
            entry["h"] = rev.spec_hash
        if rev.template is not None:
            entry["t"] = rev.template
        entries.append(entry)
    return _pack(json.dumps(entries, separators=(",", ":"), sort_keys=True))


def canary_spec(spec: WorkloadSpec, state: CanaryState) -> WorkloadSpec:
    """The whole spec a canary runs (``spec`` with the canary's recorded template put back)."""
    return restore(spec, Revision(number=1, image=state.image, template=state.template))


__all__ = [
    "COMPRESS_OVER",
    "MAX_REVISIONS",
    "canary_spec",
    "dump_history",
    "dump_template",
    "parse_history",
    "parse_template",
]
