from __future__ import annotations

pytest_plugins = ["tests.support.docker_env", "tests.support.target_swarm"]
