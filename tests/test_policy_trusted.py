"""``policy.trusted``: records built without validation, and the config hash cache."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ConfigDict, Field

from scalewise.policy.config import AutoscalingSpec
from scalewise.policy.decide import PolicyState, Step
from scalewise.policy.trusted import maker, trusted

T0 = datetime(2026, 1, 5, tzinfo=UTC)


class Sample(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    a: int
    b: str = "x"
    c: list[int] = Field(default_factory=list)


def test_trusted_equals_validated():
    assert trusted(Sample, a=1) == Sample(a=1)
    assert trusted(Sample, c=[2], a=1, b="y") == Sample(a=1, b="y", c=[2])
    built = trusted(Sample, a=1)
    assert list(built.__dict__) == ["a", "b", "c"] and built.model_dump() == {"a": 1, "b": "x", "c": []}
    assert trusted(Sample, a=1).c is not trusted(Sample, a=1).c  # a fresh default per instance
    assert trusted(PolicyState) == PolicyState()
    step = trusted(Step, name="n", proposal=None, reason="r", detail="")
    assert Step.model_validate_json(step.model_dump_json()) == step


def test_maker_instances_share_one_field_name_set_that_copies_leave_alone():
    make = maker(Sample)
    first, second = make(a=1), make(a=2, c=[3])
    assert first == Sample(a=1) and second == Sample(a=2, c=[3])
    assert first.model_fields_set == {"a", "b", "c"} and first.model_fields_set is second.model_fields_set
    changed = first.model_copy(update={"b": "z"})
    assert changed.b == "z" and changed.model_fields_set is not first.model_fields_set
    assert first.model_fields_set == {"a", "b", "c"} and first.b == "x"


class Clash(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: int


def test_maker_refuses_field_names_its_constructor_uses():
    with pytest.raises(TypeError, match="\\['fields'\\]"):
        maker(Clash)


def test_trusted_refuses_missing_and_unknown_fields():
    with pytest.raises(TypeError, match="missing fields \\['a'\\]"):
        trusted(Sample, b="y")
    with pytest.raises(TypeError, match="unknown fields \\['z'\\]"):
        trusted(Sample, a=1, z=2)
    with pytest.raises(TypeError, match="private attributes"):
        trusted(AutoscalingSpec, metrics=[])


def test_config_hash_follows_model_copy():
    spec = AutoscalingSpec.model_validate({"metrics": [{"name": "rps", "query": "up", "target": 1}]})
    first = spec.config_hash()
    changed = spec.model_copy(update={"tolerance": 0.2})
    assert changed.config_hash() != first
    assert changed.config_hash() == AutoscalingSpec.model_validate(changed.model_dump()).config_hash()
    assert spec.model_copy().config_hash() == first


def test_spec_equality_ignores_the_cached_hash():
    data = {"metrics": [{"name": "rps", "query": "up", "target": 1}]}
    hashed, fresh = AutoscalingSpec.model_validate(data), AutoscalingSpec.model_validate(data)
    hashed.config_hash()
    assert hashed == fresh and fresh == hashed
    assert hash(hashed) == hash(fresh) and len({hashed, fresh}) == 1
    other = hashed.model_copy(update={"tolerance": 0.2})
    assert other != hashed and other != fresh
    assert hashed != data  # a dict is not a spec
