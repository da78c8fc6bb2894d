"""Revisions and rollback plans: pure logic, no engine (the contract suite runs them on every target)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalewise.errors import PermanentError
from scalewise.model import Revision, WorkloadState
from scalewise.orchestrators.history import COMPRESS_OVER, dump_history, parse_history
from scalewise.revisions import (
    MAX_REVISIONS,
    plan_rollback,
    record_revision,
    render_template,
    restore,
    same_spec,
    spec_revision,
)
from scalewise.spec import WorkloadSpec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
IMAGES = ["scalewise/busybox:1", "scalewise/busybox:2", "scalewise/busybox:3"]


def spec(image: str = IMAGES[0], **extra: object) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"name": "web", "target": "docker", "image": image, **extra})


def state_of(history: list[Revision], number: int | None = None) -> WorkloadState:
    current = next(r for r in history if r.number == number) if number else history[-1]
    return WorkloadState(
        name="web", target="docker", desired_replicas=1, image=current.image, revision=current.number, version="v"
    )


def issue_history() -> list[Revision]:
    """rev 1 (:1), rev 2 (:2), rev 3 (:2 plus env): the scenario of issue 9."""
    history, _ = record_revision([], spec(IMAGES[0]), NOW)
    history, _ = record_revision(history, spec(IMAGES[1]), NOW)
    history, _ = record_revision(history, spec(IMAGES[1], env={"GREETING": "hello"}), NOW)
    return history


def test_issue_scenario_plans_the_previous_differing_revision() -> None:
    history = issue_history()
    assert [(r.number, r.image) for r in history] == [(1, IMAGES[0]), (2, IMAGES[1]), (3, IMAGES[1])]
    plan = plan_rollback(state_of(history), history, None)
    assert (plan.from_revision, plan.to_revision) == (3, 2)
    assert plan.describe()[0] == f"roll back from revision 3 ({IMAGES[1]}) to 2 ({IMAGES[1]})"
    assert plan.changes == ['env: {"GREETING": "hello"} -> {}']
    restored = restore(spec(IMAGES[1], env={"GREETING": "hello"}, replicas={"max": 7}), plan.target)
    assert restored.env == {} and restored.image == IMAGES[1] and restored.replicas.max == 7
    assert plan_rollback(state_of(history), history, None) == plan  # the dry run plans the same


def test_named_revision_and_refusals_name_the_reason() -> None:
    history = issue_history()
    assert plan_rollback(state_of(history), history, 1).target.image == IMAGES[0]
    with pytest.raises(PermanentError, match=r"unknown revision 9 \(known: 1 \(scalewise/busybox:1\)"):
        plan_rollback(state_of(history), history, 9)
    with pytest.raises(PermanentError, match=r"revision 3 renders the same spec .* would change nothing"):
        plan_rollback(state_of(history), history, 3)
    first, _ = record_revision([], spec(), NOW)
    with pytest.raises(PermanentError, match="nothing to roll back to"):
        plan_rollback(state_of(first), first, None)


def test_an_unchanged_spec_keeps_its_number_and_a_rollback_is_a_new_number() -> None:
    history = issue_history()
    same, number = record_revision(history, spec(IMAGES[1], env={"GREETING": "hello"}), NOW)
    assert (same, number) == (history, 3)
    back, number = record_revision(history, restore(spec(), history[1]), NOW)
    assert number == 4 and same_spec(back[-1], history[1])


def test_image_only_entries_still_plan_by_image() -> None:
    legacy = [Revision(number=1, image=IMAGES[0]), Revision(number=2, image=IMAGES[1])]
    plan = plan_rollback(state_of(legacy), legacy, None)
    assert plan.to_revision == 1 and "recorded only its image" in plan.changes[0]
    assert restore(spec(IMAGES[1], env={"A": "b"}), plan.target).env == {"A": "b"}
    learned, number = record_revision(legacy, spec(IMAGES[1]), NOW)
    assert number == 2 and learned[-1].template == render_template(spec(IMAGES[1]))


edits = st.lists(
    st.tuples(st.sampled_from(IMAGES), st.sampled_from([{}, {"A": "1"}, {"A": "2"}]), st.sampled_from([1, 2])),
    min_size=1,
    max_size=30,
)


@given(edits)
def test_numbering_and_default_target(steps: list[tuple[str, dict[str, str], int]]) -> None:
    history: list[Revision] = []
    numbers: list[int] = []
    for image, env, parallelism in steps:
        history, number = record_revision(history, spec(image, env=env, update={"parallelism": parallelism}), NOW)
        numbers.append(number)
    assert numbers == sorted(numbers), "numbers never go down"
    assert [r.number for r in history] == sorted({r.number for r in history})
    assert len(history) <= MAX_REVISIONS
    assert all(not same_spec(a, b) for a, b in itertools.pairwise(history))
    current = history[-1]
    older = [r for r in history[:-1] if not same_spec(r, current)]
    if not older:
        with pytest.raises(PermanentError):
            plan_rollback(state_of(history), history, None)
        return
    plan = plan_rollback(state_of(history), history, None)
    assert plan.target == older[-1] and not same_spec(plan.target, current) and plan.changes


@given(edits)
def test_history_round_trips_through_a_label(steps: list[tuple[str, dict[str, str], int]]) -> None:
    history = [spec_revision(spec(image, env=env), n + 1, NOW) for n, (image, env, _) in enumerate(steps)]
    raw = dump_history(history)
    assert parse_history(raw) == history[-MAX_REVISIONS:]
    assert len(raw) <= COMPRESS_OVER or raw.startswith("z:")
    assert len(raw) < 8192, "20 whole specs must stay far below label and annotation limits"
