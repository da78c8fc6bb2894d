"""Spec loading and validation: every error names the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
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


# --- hostile files: every failure is a SpecError naming the file --------------------------------------

VALID_TEXT = "name: web\ntarget: docker\nimage: scalewise/busybox:1\nreplicas: {min: 1, max: 3}\n"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("name: web\ntarget: docker\nname: other\nimage: x:1\n", "name", "duplicate key at line 3 (first at line 1)"),
        ("name: web\ntarget: docker\nimage: x:1\nenv: {A: '1', A: '2'}\n", "A", "duplicate key at line 4"),
        ("workloads:\n  - {name: a, target: docker, image: x:1, image: y:2}\n", "image", "duplicate key at line 2"),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(tmp_path: Path, text: str, field: str, reason: str) -> None:
    path = write(tmp_path, "dup.yaml", text)
    with pytest.raises(SpecError) as info:
        load_workloads(path)
    assert (info.value.source, info.value.field) == (str(path), field)
    assert reason in info.value.reason


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "merge.yaml", "<<: {target: docker, image: x:1}\nname: web\nimage: x:2\n")
    assert load_workloads(path)["web"].image == "x:2"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"name: w\xffeb\ntarget: docker\n", "not UTF-8: byte 0xff at line 1"),
        (b"name: web\n\ntarget: \xc3\x28\n", "not UTF-8: byte 0xc3 at line 3"),
        (b"name: web\x00\n", "not valid YAML"),
        (b"when: 2024-13-45\n", "not valid YAML: month must be in 1..12"),
        (b"[" * 5000 + b"]" * 5000, "not valid YAML"),
        (b"? [a, b]\n: c\n", "not valid YAML"),
        (
            b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
            b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
            "too large",
        ),
    ],
)
def test_hostile_files_are_spec_errors_naming_the_file(tmp_path: Path, raw: bytes, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(raw)
    with pytest.raises(SpecError) as info:
        load_workloads(path)
    assert info.value.source == str(path)
    assert reason in info.value.reason, info.value


def test_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(SpecError, match=r"dir\.yaml: cannot read"):
        load_workloads(tmp_path)


def check_loads_or_spec_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    try:
        specs = load_workloads(path)
    except SpecError as exc:
        assert str(exc).startswith(f"{path}"), exc
    else:
        assert all(spec.name == name for name, spec in specs.items())


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["web", "docker", "swarm", "kubernetes", "x:1", "1s", "start-first", "25%"]),
)
KEYS = st.one_of(
    st.sampled_from(["name", "target", "image", "replicas", "min", "max", "update", "env"]), st.text(max_size=8)
)
YAML_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=25
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_fuzz_random_bytes_load_or_spec_error(tmp_path: Path, raw: bytes) -> None:
    check_loads_or_spec_error(tmp_path, raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=YAML_VALUES, cut=st.integers(0, 400), junk=st.binary(max_size=4))
def test_fuzz_random_yaml_load_or_spec_error(tmp_path: Path, data: object, cut: int, junk: bytes) -> None:
    text = yaml.safe_dump(data, allow_unicode=True).encode()
    check_loads_or_spec_error(tmp_path, text)
    check_loads_or_spec_error(tmp_path, text[:cut] + junk + text[cut:])  # damaged
    check_loads_or_spec_error(tmp_path, VALID_TEXT.encode() + text)  # appended to a valid spec


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.fixed_dictionaries(
        {"name": st.sampled_from(["web", "a", "Bad"]), "target": st.sampled_from(["docker", "swarm", "kubernetes"]),
         "image": st.sampled_from(["x:1", "scalewise/busybox:1"])},
        optional={"replicas": YAML_VALUES, "update": YAML_VALUES, "env": YAML_VALUES, "ports": YAML_VALUES,
                  "healthcheck": YAML_VALUES, "autoscaling": YAML_VALUES, "kubernetes": YAML_VALUES},
    )
)
def test_fuzz_spec_shaped_yaml_load_or_spec_error(tmp_path: Path, data: dict[str, object]) -> None:
    check_loads_or_spec_error(tmp_path, yaml.safe_dump(data, allow_unicode=True).encode())
