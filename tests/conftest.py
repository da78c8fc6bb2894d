from __future__ import annotations

pytest_plugins = [
    "tests.support.kube",
    "tests.support.prefect_env",
    "tests.support.docker_env", "tests.support.target_swarm", "tests.support.target_engine",
    "tests.support.prom_env",
    "tests.support.webhook_env", "tests.support.alertmanager_env",
    "tests.support.target_kube",
]
