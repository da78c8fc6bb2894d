"""`scalewise analyze` / `scalewise approve`: bad input is refused before anything runs, naming the field
(exit 2, no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_calls import CliResult
from tests.support.cli_calls import cli as run_cli


def cli(*args: str, cwd: Path) -> CliResult:
    """``scalewise ARGS`` in ``cwd``, in this process, against a Prefect API where nothing listens."""
    return run_cli(*args, cwd=cwd, env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics: []\n", "bad.yaml: metrics: List should have at least 1 item"),
        (
            "metrics: [{name: err, query: 'up{job=\"{workload}\"}', success_condition: 'result[0] <'}]\n",
            "bad.yaml: metrics[0].success_condition: syntax error: 'result[0] <' ends too early",
        ),
        (
            "metrics: [{name: err, query: 'up{job={workload}}'}]\n",
            "bad.yaml: metrics[0].query: placeholder {workload} must be inside a double-quoted label value",
        ),
        ("metrics: [{name: err, query: up, failure_limit: -5}]\n", "bad.yaml: metrics[0].failure_limit"),
        ("metrics: [{name: err, query: up, interval: soon}]\n", "bad.yaml: metrics[0].interval: cannot read 'soon'"),
        ("- 1\n", "bad.yaml: an analysis is a mapping with a 'metrics' list"),
        ("metrics: [{name: err, query: up}]\nmetrics: []\n", "bad.yaml: metrics: duplicate key"),
    ],
)
def test_bad_analysis_file_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    proc = cli("analyze", "web", "--file", "bad.yaml", cwd=tmp_path)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out
    assert expected in out and "Traceback" not in out


def test_bad_options_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("metrics: [{name: err, query: up}]\n")
    proc = cli("analyze", "web", "--file", "a.yaml", "--on-inconclusive", "maybe", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "--on-inconclusive: 'maybe' is not one of approve, fail" in out
    proc = cli("analyze", "web", "--file", "a.yaml", "--approval-timeout", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--approval-timeout: must be positive" in proc.stdout + proc.stderr
    proc = cli("approve", "1234", cwd=tmp_path)
    assert proc.returncode == 2 and "RUN: '1234' is not a flow run id" in proc.stdout + proc.stderr
    proc = cli("approve", cwd=tmp_path)
    assert proc.returncode == 2 and "RUN: give a flow run id or --workload" in proc.stdout + proc.stderr
    proc = cli("approve", "0b6c2f6e-5a41-4b9e-9f0e-2d7c1f0e8a11", "--workload", "web", cwd=tmp_path)
    assert proc.returncode == 2 and "RUN: give a flow run id or --workload, one of the two" in proc.stdout + proc.stderr
    proc = cli("approve", "--workload", " ", cwd=tmp_path)
    assert proc.returncode == 2 and "--workload: must not be empty" in proc.stdout + proc.stderr
