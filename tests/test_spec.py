"""Spec loading and validation: every error names the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalewise.durations import parse_duration
from scalewise.errors import SpecError
from scalewise.policy.manual import plan_scale
from scalewise.spec import get_workload, load_workloads, parse_workload

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"name": "web", "target": "swarm", "image": "scalewise/busybox:1"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_repo_example_workloads_are_valid() -> None:
    specs = load_workloads(ROOT / "workloads")
    assert {"web", "web-swarm"} <= set(specs)
    assert specs["web"].target == "docker"


def test_defaults() -> None:
    spec = parse_workload(GOOD)
    assert spec.replicas.min == 1 and spec.replicas.max == 10 and spec.replicas.start == 1
    assert spec.update.order == "start-first" and spec.update.failure_action == "rollback"


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        ({"name": "Web"}, "name", "lowercase"),
        ({"name": "a" * 60}, "name", "53"),
        ({"target": "nomad"}, "target", "swarm"),
        ({"image": "has space"}, "image", "image reference"),
        ({"replicas": {"min": 5, "max": 2}}, "replicas", "below min"),
        ({"replicas": {"min": 1, "max": 3, "initial": 9}}, "replicas", "outside"),
        ({"replicas": {"min": -1}}, "replicas.min", "greater than or equal"),
        ({"update": {"max_surge": 0, "max_unavailable": 0}}, "update", "both be 0"),
        ({"update": {"max_surge": "150%"}}, "update.max_surge", "percentage"),
        ({"update": {"monitor": "5 parsecs"}}, "update.monitor", "duration"),
        ({"update": {"order": "random"}}, "update.order", "start-first"),
        ({"env": {"1BAD": "x"}}, "env", "not valid"),
        ({"labels": {"scalewise.owner": "x"}}, "labels", "reserved"),
        ({"ports": [{"container": 70000}]}, "ports[0].container", "less than or equal"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        ({"command": []}, "command", "at least one"),
    ],
)
def test_bad_spec_names_field_and_reason(patch: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_workload({**GOOD, **patch}, "web.yaml")
    assert info.value.source == "web.yaml"
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"web.yaml: {field}: ")


def test_folder_multi_document_and_list_forms(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: a\ntarget: docker\nimage: x:1\n---\nname: b\ntarget: swarm\nimage: x:1\n")
    write(tmp_path, "c.yml", "workloads:\n  - {name: c, target: docker, image: x:1}\n")
    write(tmp_path, "notes.txt", "ignored")
    assert sorted(load_workloads(tmp_path)) == ["a", "b", "c"]


def test_errors_name_the_file_and_document(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: a\ntarget: docker\nimage: x:1\n---\nname: b\ntarget: k8s\nimage: x:1\n")
    with pytest.raises(SpecError, match=r"a\.yaml \(document 2\): target: "):
        load_workloads(tmp_path)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: a\ntarget: docker\nimage: x:1\n")
    write(tmp_path, "b.yaml", "name: a\ntarget: swarm\nimage: x:1\n")
    with pytest.raises(SpecError, match="also declared in"):
        load_workloads(tmp_path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "name: a\ntarget: [docker\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML at line"):
        load_workloads(tmp_path)


def test_missing_path_and_unknown_workload(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_workloads(tmp_path / "nope")
    write(tmp_path, "a.yaml", "name: a\ntarget: docker\nimage: x:1\n")
    with pytest.raises(SpecError, match=r"parameter: workload: unknown workload 'zz' \(known: a\)"):
        get_workload(tmp_path, "zz")


def test_plain_docker_cannot_publish_fixed_port_with_many_replicas() -> None:
    with pytest.raises(SpecError, match="published"):
        parse_workload({**GOOD, "target": "docker", "ports": [{"container": 80, "published": 8080}]})


@pytest.mark.parametrize(
    ("text", "seconds"), [(5, 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), ("1.5", 1.5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "5x", "s5", True, None, "1m 5", float("nan")])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(
    current=st.integers(0, 50), amount=st.integers(0, 50), lo=st.integers(0, 20), span=st.integers(1, 30),
    mode=st.sampled_from(["absolute", "out", "in"]),
)
def test_manual_plan_always_within_bounds(current: int, amount: int, lo: int, span: int, mode: str) -> None:
    plan = plan_scale(current, mode, amount, lo, lo + span)  # type: ignore[arg-type]
    assert lo <= plan.target <= lo + span
    assert plan.changes == (plan.target != current)
    if mode == "out":
        assert plan.target >= min(current, lo + span)
    if mode == "in":
        assert plan.target <= max(current, lo)
