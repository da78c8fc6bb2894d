"""Analysis and manual approval on real components: a real Prometheus scraping a loopback exporter whose
error ratio the test sets, a real Prefect server, the `analysis` flow, Prefect's pause and the
`scalewise approve` CLI resuming it through the API. Every measurement lands in the action record
(`scalewise history`) and in the run's table artifact."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ParameterTypeError

from flows.analysis import analyze
from scalewise import history
from scalewise.approval import ApprovalError, resume
from scalewise.audit import ActionRecord, Trigger
from scalewise.errors import AnalysisFailed
from scalewise.local import LocalServer
from scalewise.policy.analysis import AnalysisSpec
from tasks.analysis import analysis_artifact_key
from tests.support.cli_calls import cli
from tests.support.docker_env import unique_name
from tests.support.procs import wait_for
from tests.support.prom_env import METRIC, PromEnv

pytestmark = [pytest.mark.prom, pytest.mark.prefect]

#: The exporter's gauge stands for the workload's error ratio (errors / requests over the last minute).
QUERY = METRIC + '{workload="{workload}"}'
TEST_TRIGGER = Trigger(kind="api", actor="test")


def analysis(**metric: Any) -> AnalysisSpec:
    base = {
        "name": "error-ratio", "query": QUERY, "success_condition": "result[0] < 0.05",
        "failure_condition": "result[0] > 0.2", "interval": "1s", "count": 3,
    }
    return AnalysisSpec.model_validate({"metrics": [{**base, **metric}]})


@pytest.fixture()
def workload(prom_env: PromEnv, prefect_server: LocalServer, workloads_dir: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = unique_name("an")
    (workloads_dir / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, "target": "docker", "image": "scalewise/busybox:1"})
    )
    monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", prom_env.url)
    yield name
    prom_env.exporter.remove(name)


def error_ratio(prom_env: PromEnv, workload: str, value: float) -> None:
    prom_env.exporter.set(workload, value)
    prom_env.wait_for_value(QUERY.replace("{workload}", workload), value, timeout=60)


def last_record(workload: str) -> ActionRecord:
    entries = [e for e in history.fetch(workload) if e.record.operation == "analysis"]
    assert entries, f"no analysis record for {workload}"
    return entries[-1].record


def measurements(record: ActionRecord) -> list[dict[str, Any]]:
    assert record.analysis is not None
    return list(record.analysis["measurements"])


def test_good_error_ratio_is_successful_and_every_measurement_is_recorded(prom_env: PromEnv, workload: str) -> None:
    error_ratio(prom_env, workload, 0.01)
    record = analyze(workload=workload, analysis=analysis(), trigger=TEST_TRIGGER)
    assert record.outcome == "succeeded" and record.analysis is not None
    assert record.analysis["phase"] == "Successful"
    rows = measurements(record)
    assert [(r["metric"], r["value"], r["phase"]) for r in rows] == [("error-ratio", "[0.01]", "Successful")] * 3
    stored = last_record(workload)
    assert stored.id == record.id and measurements(stored) == rows
    assert "analysis Successful" in history.detail(stored) and "error-ratio=[0.01] Successful" in history.detail(stored)
    with get_client(sync_client=True) as client:
        art = client.read_latest_artifacts()
        keys = {a.key for a in art}
    assert analysis_artifact_key(workload) in keys


def test_bad_error_ratio_fails_after_failure_limit_is_exceeded(prom_env: PromEnv, workload: str) -> None:
    error_ratio(prom_env, workload, 0.5)
    with pytest.raises(AnalysisFailed, match=r"failed \(3\) > failure_limit \(2\)"):
        analyze(workload=workload, analysis=analysis(count=6, failure_limit=2), trigger=TEST_TRIGGER)
    record = last_record(workload)
    assert record.outcome == "failed" and record.analysis is not None
    assert record.analysis["phase"] == "Failed"
    # failure_limit 2: the metric fails at the third failed measurement, not at the first, not at count
    assert [r["phase"] for r in measurements(record)] == ["Failed"] * 3
    assert "failure_limit (2)" in (record.error or "")


def test_no_data_is_an_error_after_the_consecutive_error_limit(prom_env: PromEnv, workload: str) -> None:
    # nothing is exported for this workload: result is [], result[0] cannot be evaluated
    spec = AnalysisSpec.model_validate({
        "metrics": [{"name": "error-ratio", "query": QUERY, "success_condition": "result[0] < 0.05",
                     "consecutive_error_limit": 1}],
        "error_retry_interval": "1s",
    })
    with pytest.raises(AnalysisFailed, match=r"Error.*consecutive errors \(2\) > consecutive_error_limit \(1\)"):
        analyze(workload=workload, analysis=spec, trigger=TEST_TRIGGER)
    rows = measurements(last_record(workload))
    assert [r["phase"] for r in rows] == ["Error", "Error"]
    assert "no data" in rows[0]["message"]


# -- Inconclusive -> a person decides ---------------------------------------------------------------


def paused_run(workload: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"analysis-{workload}"]))
        )
    return next((r for r in runs if r.state is not None and r.state.is_paused()), None)


class Background:
    """The analysis flow run in a thread of this process (as `scalewise analyze` runs it)."""

    def __init__(self, **params: Any) -> None:
        self.result: ActionRecord | None = None
        self.error: BaseException | None = None
        # the thread runs in a copy of this context: the test server's Prefect settings come along
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(self._run,), kwargs=params, daemon=True)
        self.thread.start()

    def _run(self, **params: Any) -> None:
        try:
            self.result = analyze(**params)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout_s: float = 120) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the analysis run did not end"


def test_good_analysis_from_the_cli_and_its_history(prom_env: PromEnv, workload: str, tmp_path: Path) -> None:
    error_ratio(prom_env, workload, 0.01)
    spec = tmp_path / "analysis.yaml"
    spec.write_text(yaml.safe_dump({"analysis": analysis().model_dump(mode="json")}))
    done = cli("analyze", workload, "--file", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"analysis {workload}: succeeded" in done.stdout and "error-ratio = [0.01]: Successful" in done.stdout
    shown = cli("history", workload)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    flat = " ".join(shown.stdout.split())
    assert "analysis Successful" in flat and "error-ratio=[0.01] Successful" in flat


def test_inconclusive_pauses_and_is_approved_with_the_cli(prom_env: PromEnv, workload: str, tmp_path: Path) -> None:
    error_ratio(prom_env, workload, 0.1)  # between success (< 0.05) and failure (> 0.2)
    spec = tmp_path / "analysis.yaml"
    spec.write_text(yaml.safe_dump(analysis().model_dump(mode="json")))
    log = tmp_path / "analyze.log"
    with log.open("wb") as out:  # `scalewise analyze` as a user runs it, waiting for the approval
        proc = subprocess.Popen(
            [sys.executable, "-m", "scalewise.cli", "analyze", workload, "--file", str(spec)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
        )
    try:
        paused = wait_for(lambda: paused_run(workload), 180, "the analysis run to pause for approval", log)
        assert paused.state is not None and paused.state.state_details.run_input_keyset  # the UI's Resume form
        assert f"scalewise approve {paused.id}" in log.read_text()
        bad = cli("approve", "not-a-run-id")
        assert bad.returncode == 2 and "RUN: 'not-a-run-id' is not a flow run id" in bad.stdout + bad.stderr
        # by the workload's name: it has exactly one paused run
        done = cli("approve", "--workload", workload, "--comment", "error ratio 10% is the known batch job")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"({paused.id})" in done.stdout, done.stdout
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    record = last_record(workload)
    assert record.outcome == "succeeded" and record.flow_run_id == str(paused.id)
    assert record.analysis is not None and record.analysis["phase"] == "Inconclusive"
    assert record.approval is not None and record.approval.approved
    assert record.approval.approver is not None and record.approval.approver.startswith("cli:")
    assert record.approval.comment == "error ratio 10% is the known batch job"
    detail = history.detail(record)
    assert "error-ratio=[0.1] Inconclusive" in detail and "approved by cli:" in detail
    again = cli("approve", str(paused.id))  # nothing to approve any more
    assert again.returncode == 1 and "is not paused" in again.stdout + again.stderr
    again = cli("approve", "--workload", workload)
    assert again.returncode == 1 and f"no run of workload {workload!r} is paused" in again.stdout + again.stderr


def test_inconclusive_rejected_through_the_api_fails_the_run(prom_env: PromEnv, workload: str) -> None:
    error_ratio(prom_env, workload, 0.1)
    run = Background(workload=workload, analysis=analysis(count=1), trigger=TEST_TRIGGER, approval_timeout_s=600)
    paused = wait_for(lambda: paused_run(workload), 120, "the analysis run to pause for approval")
    resume(str(paused.id), approve=False, comment="not with a 10% error ratio", approver="alice")
    run.join()
    assert isinstance(run.error, AnalysisFailed) and "rejected by alice" in str(run.error)
    record = last_record(workload)
    assert record.outcome == "failed" and record.approval is not None
    assert (record.approval.approved, record.approval.approver) == (False, "alice")
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(paused.id).state
    assert state is not None and state.is_failed()


def test_unanswered_approval_times_out_and_aborts(prom_env: PromEnv, workload: str) -> None:
    error_ratio(prom_env, workload, 0.1)
    with pytest.raises(AnalysisFailed, match="nobody answered within 3s"):
        analyze(workload=workload, analysis=analysis(count=1), trigger=TEST_TRIGGER, approval_timeout_s=3)
    record = last_record(workload)
    assert record.outcome == "failed" and record.approval is not None and record.approval.timed_out
    assert record.flow_run_id is not None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(record.flow_run_id).state
    assert state is not None and state.is_failed()
    with pytest.raises(ApprovalError, match="not paused"):
        resume(record.flow_run_id, approve=True, comment="", approver="late")


def test_bad_analysis_parameters_fail_naming_the_field(workload: str) -> None:
    bad = {"metrics": [{"name": "error-ratio", "query": QUERY, "success_condition": "result[0] <"}]}
    with pytest.raises(ParameterTypeError, match=r"success_condition[\s\S]*ends too early"):
        analyze(workload=workload, analysis=bad, trigger=TEST_TRIGGER)  # type: ignore[arg-type]
    with pytest.raises(ParameterTypeError, match="approval_timeout_s"):
        analyze(workload=workload, analysis=analysis(), approval_timeout_s=0, trigger=TEST_TRIGGER)
    assert not [e for e in history.fetch(workload) if e.record.operation == "analysis"]  # nothing ran
