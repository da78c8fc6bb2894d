"""Coalescing queued webhook requests: a newer ABSOLUTE request for a workload supersedes the older
accepted requests of the same action for that workload whose runs have not started yet.

Like Alertmanager's grouping and a Kubernetes spec, an absolute request states the end state, not a
step towards it, so of several queued ones only the newest matters: the older runs would each take
the workload lock, write, and be overwritten (and, run in lock order rather than request order, an
older one could even be written last). The receiver cancels them before they start, each with a
message naming the run that superseded it (:func:`superseded_message`); the older caller's run ends
Cancelled with that pointer, and its ``Idempotency-Key`` still answers with its own run.

Pure rules here (no I/O); the receiver (``app.py``) reads the queue and cancels through its
starter (``starter.py``), which claims a run before cancelling it so a run that started is never
touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Tag carrying the request's reference (its Idempotency-Key, or the alert) on each run the receiver
#: starts, so any replica can name the superseding request in the message.
REQUEST_TAG = "request:"
MAX_REF = 150
_MESSAGE = re.compile(r"^superseded by request (?P<ref>.*)/run (?P<run>[0-9a-fA-F-]{36})", re.DOTALL)


#: The actions that can be absolute (see :func:`is_absolute`).
ABSOLUTE_ACTIONS = ("scale", "rolling-update", "rollback")


def is_absolute(action: str, params: Mapping[str, Any]) -> bool:
    """Whether the parameters of ``action`` fully define the workload's end state.

    - ``scale`` (``replicas``): the count itself. Absolute.
    - ``rolling-update`` (``image``): the image every replica ends on (the rollout settings come from
      the workload's spec, not the request). Absolute: a newer image replaces a queued older one, as
      a newer Deployment template replaces a rollout in Kubernetes.
    - ``rollback`` with ``to_revision``: that revision. Absolute. Without it, "the previous revision"
      is relative to whatever runs when the run starts: never coalesced.
    - ``scale-out`` / ``scale-in`` (``by``): steps from the current count. Relative: never coalesced
      (two queued steps of one are a step of two).
    A dry run writes nothing, so it neither supersedes nor is superseded (its plan is its purpose).
    """
    if params.get("dry_run"):
        return False
    if action == "scale":
        return params.get("replicas") is not None
    if action == "rolling-update":
        return params.get("image") is not None
    if action == "rollback":
        return params.get("to_revision") is not None
    return False


@dataclass(frozen=True)
class QueuedRun:
    """A receiver-started run of one deployment that has not finished, as the orchestrator lists it."""

    flow_run_id: str
    created: datetime | None
    parameters: Mapping[str, Any]
    tags: Sequence[str]
    #: Scheduled (no runner has claimed it), or Pending with a supersede message (claimed by a
    #: receiver that stopped before cancelling it): cancelling it cannot touch a started run.
    unstarted: bool
    #: Pending with a supersede message: already claimed by a receiver for cancelling.
    claimed: bool = False
    #: The state's message (a claimed run's names the run that superseded it).
    message: str | None = None


def request_ref(tags: Sequence[str]) -> str | None:
    return next((t[len(REQUEST_TAG):] for t in tags if t.startswith(REQUEST_TAG)), None)


def request_tag(ref: str) -> str:
    return REQUEST_TAG + ref[:MAX_REF]


def superseded_message(ref: str | None, run_id: str, action: str, workload: str, params: Mapping[str, Any]) -> str:
    what = {"scale": "replicas", "rolling-update": "image", "rollback": "to_revision"}.get(action)
    target = f" {what}={params.get(what)}" if what else ""
    return (
        f"superseded by request {ref or '(no Idempotency-Key)'}/run {run_id}: a newer {action}{target} for "
        f"{workload} was accepted before this run started; it was not started (absolute requests coalesce)"
    )


def parse_superseded(message: str | None) -> tuple[str, str] | None:
    """``(request ref, run id)`` from a :func:`superseded_message`, else None."""
    match = _MESSAGE.match(message or "")
    return (match["ref"], match["run"]) if match else None


def _order(run: QueuedRun) -> tuple[float, str]:
    return (run.created.timestamp() if run.created is not None else float("-inf"), run.flow_run_id)


def plan_supersede(
    action: str, workload: str, own: QueuedRun, queued: Sequence[QueuedRun]
) -> tuple[QueuedRun, list[QueuedRun]]:
    """``(newest, to_cancel)``: of ``own`` (the run just created; as listed if it is, else started) and
    the listed runs of the same action for ``workload`` that are absolute, the newest by creation time
    (the orchestrator's clock; the run id breaks ties), and the unstarted ones older than it, oldest
    first.

    Every pass cancels all but the newest it sees, its own run included: of two requests racing,
    the one whose run was stored second lists both, so at most the newest is left to act, whichever
    receiver replica handled which."""
    same = {
        run.flow_run_id: run
        for run in queued
        if run.parameters.get("workload") == workload and is_absolute(action, run.parameters)
    }
    same.setdefault(own.flow_run_id, own)  # not listed: it has started (or ended) already
    newest = max(same.values(), key=_order)
    older = sorted((r for r in same.values() if r is not newest and r.unstarted), key=_order)
    return newest, older


__all__ = [
    "ABSOLUTE_ACTIONS",
    "QueuedRun",
    "is_absolute",
    "parse_superseded",
    "plan_supersede",
    "request_ref",
    "request_tag",
    "superseded_message",
]
