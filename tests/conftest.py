from __future__ import annotations

pytest_plugins = [
    "tests.support.kube",
    "tests.support.prefect_env",
    "tests.support.docker_env", "tests.support.target_swarm", "tests.support.target_engine",
    "tests.support.prom_env",
    "tests.support.webhook_env", "tests.support.alertmanager_env",
    "tests.support.target_kube",
    "tests.support.target_fake",
]

import os  # noqa: E402

import pytest  # noqa: E402

# A loaded 2-core machine can hold a Prometheus query past the product's default 5 s; a timed-out read
# is a missing metric and the decision holds before its later steps (ci7 lost a forecast step so).
# Set for the whole session so the processes the tests start (serve, receivers) inherit it too.
os.environ.setdefault("SCALEWISE_PROMETHEUS_TIMEOUT", "60")
# pytest-xdist starts its workers with COLUMNS=80, and rich fixes a console's width from COLUMNS when the
# console is made (scalewise.cli's, at import): every CLI table in a worker was then 80 wide, whatever
# width a test's CliRunner(env={"COLUMNS": ...}) asked for (ci16: two tables wrapped). Unset, the
# console reads COLUMNS when it prints, as in a new process.
os.environ.pop("COLUMNS", None)
# No test reads run logs from the API. Sent, every flow run's log lines are requests and rows for the
# session's Prefect server on a CPU-bound 2-core machine. Inherited by the processes the tests start.
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


def _own_random_for_websockets() -> None:
    """websockets draws each keepalive ping's payload from the global ``random`` module. A Prefect
    client's event websocket pings from a background thread of the xdist worker, and Hypothesis warns
    when the global state changes while a strategy draws ("Do not use the random module inside
    strategies"): a different hypothesis test each run (ci18 test_spec, ci19 test_policy). The
    websockets modules get a generator of their own (tests/unit/test_random_isolation.py)."""
    import importlib
    import random

    for name in ("websockets.asyncio.connection", "websockets.sync.connection"):  # (legacy: unused, deprecated)
        module = importlib.import_module(name)
        if getattr(module, "random", None) is random:
            module.random = random.Random()  # type: ignore[attr-defined]


_own_random_for_websockets()

#: Fixtures that start or need a real component (dockerd, Swarm, a Prefect server, Prometheus,
#: Alertmanager, the Kubernetes control plane). A test using none of them is in the fast tier.
COMPONENT_FIXTURES = frozenset(
    {
        "docker_engine", "docker_target", "swarm_target", "kubernetes_target", "kube_cluster",
        "prefect_server", "prom_env", "receiver", "http", "webhook_deployments",
    }
)


#: The slowest test files, longest first (summed seconds of a plain run, session 8: stack 408, contract
#: 362, interrupted 222, autoscale_flow 198, images 185, ...). They are collected first, and
#: scripts/test.sh hands files to the xdist workers in collection order (``--no-loadscope-reorder``;
#: xdist's default orders files by their number of tests, which put the 3-test, 400 s stack file near
#: the end, where the other worker would sit idle while it runs). Longest first keeps the tail short.
SLOW_FIRST = (
    "test_stack.py", "test_contract.py", "test_interrupted.py", "test_autoscale_flow.py", "test_images.py",
    "test_webhook_e2e.py", "test_canary_e2e.py", "test_autoscale_triggers.py", "test_autoscale_schedule.py",
    "test_flows.py", "test_webhook_requests.py", "test_kube_adapter.py", "test_prefect_project.py",
    "test_lock_lease.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a real component ``component``: ``-m 'not component'`` is the fast tier
    (pure and unit tests; what ``scripts/test.sh --fast`` runs). Then put the files of ``SLOW_FIRST``
    first, in that order (the order within a file, and of the other files, is kept)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # a stable sort
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        markers = {m.name for m in item.iter_markers()}
        callspec = getattr(item, "callspec", None)
        real_target = callspec is not None and callspec.params.get("target", "fake") != "fake"
        if real_target or names & COMPONENT_FIXTURES or markers & {"docker", "swarm", "prefect", "kube", "prom"}:
            item.add_marker(pytest.mark.component)
