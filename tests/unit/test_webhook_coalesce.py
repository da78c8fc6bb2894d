"""The webhook's coalescing rules (pure): which requests are absolute, who supersedes whom, the message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from scalewise.webhook.coalesce import (
    QueuedRun,
    is_absolute,
    parse_superseded,
    plan_supersede,
    request_ref,
    request_tag,
    superseded_message,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_which_requests_are_absolute() -> None:
    assert is_absolute("scale", {"replicas": 0})
    assert is_absolute("rolling-update", {"image": "x:2"})
    assert is_absolute("rollback", {"to_revision": 3})
    assert not is_absolute("rollback", {})  # "the previous revision": relative to what runs then
    assert not is_absolute("scale-out", {"by": 2}) and not is_absolute("scale-in", {"by": 1})
    assert not is_absolute("scale", {"replicas": 2, "dry_run": True})


def test_message_names_request_and_run_and_parses_back() -> None:
    run = str(uuid.uuid4())
    message = superseded_message("deploy-7", run, "scale", "web", {"replicas": 3})
    assert message.startswith(f"superseded by request deploy-7/run {run}: a newer scale replicas=3 for web")
    assert parse_superseded(message) == ("deploy-7", run)
    assert parse_superseded(superseded_message(None, run, "scale", "web", {}))[1] == run  # type: ignore[index]
    assert parse_superseded("cancelled by a person") is None and parse_superseded(None) is None
    assert request_ref(["scalewise", request_tag("k/run 1")]) == "k/run 1" and request_ref(["webhook"]) is None


@given(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=150))  # keys are 1-200 chars
def test_any_reference_round_trips(ref: str) -> None:
    run = str(uuid.uuid4())
    assert parse_superseded(superseded_message(ref, run, "rolling-update", "web", {"image": "x:1"})) == (ref, run)


runs = st.lists(
    st.tuples(
        st.integers(0, 20),  # created, seconds after T0
        st.sampled_from(["web", "api"]),
        st.sampled_from(["scale", "scale-out"]),  # what the run's parameters look like
        st.booleans(),  # unstarted
        st.booleans(),  # dry run
    ),
    max_size=12,
)


@given(runs, st.integers(0, 20), st.booleans())
def test_only_the_newest_is_left_and_started_runs_are_never_cancelled(
    listed: list[tuple[int, str, str, bool, bool]], own_at: int, own_listed: bool
) -> None:
    queued = [
        QueuedRun(
            f"run-{i:02d}", T0 + timedelta(seconds=at),
            {"workload": w, "dry_run": dry, **({"replicas": 2} if kind == "scale" else {"by": 1})}, [], unstarted,
        )
        for i, (at, w, kind, unstarted, dry) in enumerate(listed)
    ]
    own = QueuedRun("run-own", T0 + timedelta(seconds=own_at), {"workload": "web", "replicas": 3}, [], own_listed)
    newest, cancel = plan_supersede("scale", "web", own, [*queued, own] if own_listed else queued)
    same = [r for r in [*queued, own] if r.parameters["workload"] == "web" and "replicas" in r.parameters
            and not r.parameters.get("dry_run")]
    key = lambda r: (r.created, r.flow_run_id)  # noqa: E731
    assert newest == max(same, key=key)
    assert newest not in cancel
    assert all(r.unstarted for r in cancel)  # a started (claimed, running) run is never touched
    assert all(r in same and key(r) < key(newest) for r in cancel)  # other workloads, relative, dry runs: never
    assert cancel == sorted(cancel, key=key)
    assert {r.flow_run_id for r in same if r.unstarted and r is not newest} == {r.flow_run_id for r in cancel}
    if not own_listed:
        assert own not in cancel  # not listed: started already
