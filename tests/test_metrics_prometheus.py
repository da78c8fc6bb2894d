"""PrometheusSource against a real Prometheus scraping a test-controlled exporter."""

from __future__ import annotations

import math
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scalewise.metrics.base import WorkloadRef, read_all
from scalewise.metrics.prometheus_source import PrometheusSource, escape_label_value, render_query
from scalewise.policy.config import AutoscalingSpec, MetricTarget
from scalewise.policy.decide import decide
from tests.support.prom_env import METRIC, PromEnv, start_prometheus

pytestmark = pytest.mark.prom

Q = METRIC + '{workload="{workload}"}'


def wl() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


def metric(query: str = Q, **kw) -> MetricTarget:
    return MetricTarget.model_validate({"name": "load", "query": query, "type": "value", "target": 10, **kw})


def test_value_read_back(prom_env: PromEnv):
    name = wl()
    prom_env.exporter.set(name, 42.5)
    prom_env.wait_for_value(f'{METRIC}{{workload="{name}"}}', 42.5)
    src = PrometheusSource(prom_env.url)
    r = src.read(metric(), WorkloadRef(name))
    assert r.ok and r.value == 42.5 and r.error is None
    assert abs((datetime.now(UTC) - r.timestamp).total_seconds()) < 10
    # and the policy turns it into a decision: 42.5 / 10 with 1 ready replica -> ceil(4.25) = 5
    d = decide(
        AutoscalingSpec(metrics=[metric()]), (1, 10), [r], 1, 1, None, r.timestamp + timedelta(seconds=1)
    )
    assert (d.desired, d.reason) == (5, "scale_up")


def test_template_substitution_and_hostile_names(prom_env: PromEnv):
    q = 'sum(x{workload="{workload}",namespace="{namespace}",target="{target}"})'
    assert render_query(q, WorkloadRef("web", "prod", "kubernetes")) == (
        'sum(x{workload="web",namespace="prod",target="kubernetes"})'
    )
    src = PrometheusSource(prom_env.url)
    hostile = 'web"} or vector(1) or x{a="'
    for ref in (
        WorkloadRef(hostile),
        WorkloadRef("web", namespace='x"\n'),
        WorkloadRef("UPPER"),
        WorkloadRef("web", target="nomad"),
    ):
        with pytest.raises(ValueError):
            render_query(Q, ref)
        r = src.read(metric(), ref)
        assert not r.ok and r.error == "bad_query" and r.value is None
    # Escaping alone keeps even a hostile value inside its string literal: Prometheus parses it as
    # one label value (no series), where the unescaped text would have injected `or vector(1)`.
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    escaped = f'{METRIC}{{workload="{escape_label_value(hostile)}"}}'
    assert src.query(escaped) == []
    injected = f'{METRIC}{{workload="{hostile}"}}'
    assert len(src.query(injected)) >= 1  # what the escaping prevents


def test_empty_result_is_distinct(prom_env: PromEnv):
    src = PrometheusSource(prom_env.url)
    r = src.read(metric(), WorkloadRef(wl()))
    assert r.outcome == "empty" and r.error == "empty" and r.value is None and not r.ok


def test_several_series(prom_env: PromEnv):
    name = wl()
    prom_env.exporter.set(name, 3, replica="a")
    prom_env.exporter.set(name, 5, replica="b")
    prom_env.wait_for_value(f'count({METRIC}{{workload="{name}"}})', 2)
    src = PrometheusSource(prom_env.url)
    ref = WorkloadRef(name)
    r = src.read(metric(), ref)
    assert not r.ok and r.error == "multiple_series"
    assert src.read(metric(multiple_series="sum"), ref).value == 8
    assert src.read(metric(multiple_series="max"), ref).value == 5
    per = src.read(metric(per_replica_label="replica", type="average_value"), ref)
    assert per.ok and per.values == {"a": 3.0, "b": 5.0}


@pytest.mark.parametrize(("value", "code"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "inf")])
def test_nan_and_inf_are_failed_reads(prom_env: PromEnv, value: float, code: str):
    name = wl()
    prom_env.exporter.set(name, value)
    prom_env.wait_until(lambda: len(prom_env.query(f'{METRIC}{{workload="{name}"}}')) == 1, what="series")
    r = PrometheusSource(prom_env.url).read(metric(), WorkloadRef(name))
    assert not r.ok and r.error == code and r.value is None


def test_scalar_and_bad_query(prom_env: PromEnv):
    src = PrometheusSource(prom_env.url)
    r = src.read(metric("scalar(vector(7))"), WorkloadRef("web"))
    assert r.ok and r.value == 7
    r = src.read(metric("scalar(vector(0) / 0)"), WorkloadRef("web"))
    assert r.error == "nan"
    r = src.read(metric('sum(rate(x{workload="{workload}"}[1m]'), WorkloadRef("web"))
    assert r.error == "bad_query" and not r.ok
    r = src.read(metric(METRIC + '{workload="{workload}"}[1m]'), WorkloadRef("web"))
    assert r.error in ("bad_query", "empty")


def test_prometheus_stopped_is_a_failed_read_not_zero(prom_env: PromEnv):
    name = wl()
    prom_env.exporter.set(name, 9)
    with start_prometheus(prom_env.exporter, rule_files=False) as own:
        own.wait_for_value(f'{METRIC}{{workload="{name}"}}', 9)
        src = PrometheusSource(own.url, timeout=2)
        assert src.read(metric(), WorkloadRef(name)).value == 9
        own.stop()
        r = src.read(metric(), WorkloadRef(name))
    assert not r.ok and r.error == "connection" and r.value is None
    assert f"Prometheus unreachable at {own.url}" in r.detail and "SCALEWISE_PROMETHEUS_URL" in r.detail, r.detail


def test_timeout_is_a_failed_read():
    # A listening socket that never answers: the connection succeeds, the answer never comes.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        port = black_hole.getsockname()[1]
        src = PrometheusSource(f"http://127.0.0.1:{port}", timeout=0.5)
        r = src.read(metric(), WorkloadRef("web"))
    assert not r.ok and r.error == "timeout"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_and_basic_auth(prom_env: PromEnv):
    name = wl()
    prom_env.exporter.set(name, 4)
    with start_prometheus(prom_env.exporter, rule_files=False, tls=True, basic_auth=("sw", "s3cret")) as env:
        env.wait_for_value(f'{METRIC}{{workload="{name}"}}', 4)
        ref = WorkloadRef(name)
        ok = PrometheusSource(env.url, ca_file=env.ca_file, basic_auth=("sw", "s3cret")).read(metric(), ref)
        assert ok.ok and ok.value == 4
        insecure = PrometheusSource(env.url, insecure=True, basic_auth=("sw", "s3cret")).read(metric(), ref)
        assert insecure.value == 4
        unverified = PrometheusSource(env.url, basic_auth=("sw", "s3cret")).read(metric(), ref)
        assert unverified.error == "connection" and "SSL" in unverified.detail
        wrong = PrometheusSource(env.url, ca_file=env.ca_file, basic_auth=("sw", "nope")).read(metric(), ref)
        assert wrong.error == "http" and "401" in wrong.detail
        bearer = PrometheusSource(env.url, ca_file=env.ca_file, bearer_token="t").read(metric(), ref)
        assert bearer.error == "http"  # Prometheus wants basic auth here; the header was sent


def test_read_all_and_rules_support(prom_env: PromEnv):
    name = wl()
    prom_env.exporter.set(name, 1)
    metrics = [metric(), MetricTarget(name="cpu", source="docker_cpu", type="utilization", target=50)]
    readings = read_all(metrics, WorkloadRef(name), {"prometheus": PrometheusSource(prom_env.url)})
    assert [r.name for r in readings] == ["load", "cpu"]
    assert readings[1].error == "source" and "docker_cpu" in readings[1].detail
    # the fixture's rule/alerting hooks work for later Alertmanager tests
    prom_env.set_rules(
        {
            "groups": [
                {
                    "name": "t",
                    "rules": [
                        {
                            "alert": "ScalewiseTestHigh",
                            "expr": f'{METRIC}{{workload="{name}"}} > 0',
                            "for": "0s",
                        }
                    ],
                }
            ]
        }
    )
    prom_env.wait_until(
        lambda: any(a["labels"]["alertname"] == "ScalewiseTestHigh" for a in prom_env.alerts()), what="alert"
    )
    prom_env.set_rules("groups: []\n")
