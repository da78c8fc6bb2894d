"""The README's spec examples are valid specs (the README stays true)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from scalewise.spec import parse_workload

README_PATH = Path(__file__).resolve().parents[1] / "README.md"
README = README_PATH.read_text()
BLOCKS = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README, re.S)]


def test_workload_example_is_valid() -> None:
    example = next(b for b in BLOCKS if isinstance(b, dict) and "target" in b)
    spec = parse_workload(example, "README.md")
    assert spec.name == "web" and spec.update.timeout == 90


def test_autoscaling_example_is_valid() -> None:
    example = next(b for b in BLOCKS if isinstance(b, dict) and set(b) == {"autoscaling"})
    spec = parse_workload(
        {"name": "web", "target": "swarm", "image": "scalewise/busybox:1", **example}, "README.md"
    )
    assert spec.autoscaling is not None
    assert [m.name for m in spec.autoscaling.metrics] == ["rps", "cpu"]


def test_analysis_example_is_the_shipped_file_and_valid() -> None:
    from scalewise.policy.analysis import AnalysisSpec

    shipped = yaml.safe_load((README_PATH.parent / "deployments" / "analysis.example.yaml").read_text())
    example = next(b for b in BLOCKS if isinstance(b, dict) and set(b) == {"metrics"})
    assert example == shipped
    spec = AnalysisSpec.model_validate(example)
    assert [m.name for m in spec.metrics] == ["error-ratio", "latency-p99"] and spec.metrics[1].dry_run
    assert "scalewise analyze web --file deployments/analysis.example.yaml" in README
    assert "scalewise approve " in README


def test_canary_examples_are_valid_and_the_steps_file_is_shipped() -> None:
    from scalewise.cli import load_steps

    example = next(b for b in BLOCKS if isinstance(b, dict) and set(b) == {"update"})
    spec = parse_workload({"name": "web", "target": "docker", "image": "scalewise/busybox:1", **example}, "README.md")
    assert spec.update.strategy == "canary"
    assert [s.describe() for s in spec.update.steps] == [
        "set weight 20%", "pause 120s", "analysis: error-ratio", "set weight 50%", "pause until approved",
    ]
    shipped = load_steps(README_PATH.parent / "deployments" / "canary.example.yaml")
    assert [s.describe() for s in shipped] == ["set weight 50%", "pause 10s", "pause until approved"]
    assert "scalewise canary web scalewise/busybox:2 --file deployments/canary.example.yaml" in README
