"""Reading the audit trail back from the Prefect API (local or remote)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from pydantic import BaseModel

from scalewise.audit import ARTIFACT_PREFIX, ActionRecord, artifact_key

PAGE = 200
_TIMED = re.compile(r"^\d\d:\d\d:\d\d ")  # a plan line a flow wrote as it went (the canary's steps)
FIELDS = (
    "time", "workload", "operation", "trigger", "before", "after", "reason", "outcome", "detail", "error", "run_url"
)


class HistoryEntry(BaseModel):
    record: ActionRecord
    run_url: str | None

    def flat(self) -> dict[str, object]:
        r = self.record
        return {
            "time": r.started_at.isoformat(timespec="seconds"),
            "workload": r.workload,
            "operation": r.operation,
            "trigger": r.trigger.label(),
            "before": _fmt(r.before.replicas, r.before.image, r.before.revision),
            "after": _fmt(r.after.replicas, r.after.image, r.after.revision),
            "reason": r.reason,
            "outcome": r.outcome + (" (dry run)" if r.dry_run else ""),
            "detail": detail(r),
            "error": r.error or "",
            "run_url": self.run_url or "",
        }


def detail(record: ActionRecord) -> str:
    """A canary's timed steps, an analysis's verdict, each measurement (metric=value phase) and the
    approval, on one line."""
    parts: list[str] = [p for p in record.plan if _TIMED.match(p)] if record.operation == "canary" else []
    if record.analysis:
        a = record.analysis
        parts.append(f"analysis {a.get('phase')}" + (f" ({a['message']})" if a.get("message") else ""))
        parts.extend(
            f"{m.get('metric')}={m.get('value') or '-'} {m.get('phase')}" for m in a.get("measurements", [])
        )
    if record.approval:
        ap = record.approval
        if ap.timed_out:
            parts.append(f"approval timed out ({ap.comment})")
        else:
            who = ap.approver or "unnamed approver"
            verdict = "approved" if ap.approved else "rejected"
            parts.append(f"{verdict} by {who}" + (f": {ap.comment}" if ap.comment else ""))
    return "; ".join(parts)


def _fmt(replicas: int | None, image: str | None, revision: int | None) -> str:
    if replicas is None and image is None:
        return "-"
    return f"{replicas} x {image}" + (f" r{revision}" if revision is not None else "")


def ui_base() -> str | None:
    ui = PREFECT_UI_URL.value()
    if ui:
        return str(ui).rstrip("/")
    api = PREFECT_API_URL.value()
    return str(api).rstrip("/").removesuffix("/api") if api else None


def fetch(workload: str | None = None, since: datetime | None = None, limit: int = 1000) -> list[HistoryEntry]:
    """Action records, oldest first, optionally for one workload and since a time."""
    key = artifact_key(workload) if workload else ARTIFACT_PREFIX
    base = ui_base()
    entries: list[HistoryEntry] = []
    seen: set[str] = set()  # newest first: the first version of a record id is its latest
    offset = 0
    with get_client(sync_client=True) as client:
        while len(entries) < limit:
            page = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=key)),
                sort=ArtifactSort.CREATED_DESC,
                limit=PAGE,
                offset=offset,
            )
            if not page:
                break
            offset += len(page)
            done = False
            for art in page:
                if not art.key or (workload and art.key != key) or not art.key.startswith(ARTIFACT_PREFIX):
                    continue
                record = _parse(art.data)
                if record is None or record.id in seen:
                    continue
                seen.add(record.id)
                if since and record.started_at < since:
                    done = True
                    break
                url = f"{base}/runs/flow-run/{record.flow_run_id}" if base and record.flow_run_id else None
                entries.append(HistoryEntry(record=record, run_url=url))
            if done or len(page) < PAGE:
                break
    entries.sort(key=lambda e: e.record.started_at)
    return entries[-limit:]


def recent(workload: str, limit: int = 20) -> list[ActionRecord]:
    """The latest version of each of the newest action records of ``workload``, newest first
    (one page: for finding an interrupted ``in_progress`` record, not for reports)."""
    key = artifact_key(workload)
    out: list[ActionRecord] = []
    seen: set[str] = set()
    with get_client(sync_client=True) as client:
        page = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=limit,
        )
    for art in page:
        record = _parse(art.data)
        if record is not None and record.id not in seen:
            seen.add(record.id)
            out.append(record)
    return out


def _parse(data: object) -> ActionRecord | None:
    rows = json.loads(data) if isinstance(data, str) else data
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict) or "record" not in rows[0]:
        return None
    return ActionRecord.model_validate_json(rows[0]["record"])


def to_csv(entries: list[HistoryEntry]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(FIELDS))
    writer.writeheader()
    for e in entries:
        writer.writerow(e.flat())
    return out.getvalue()


def to_json(entries: list[HistoryEntry]) -> str:
    return json.dumps(
        [{**e.record.model_dump(mode="json"), "run_url": e.run_url} for e in entries], indent=2
    )
