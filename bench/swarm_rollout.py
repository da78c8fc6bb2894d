"""Rolling update of N replicas on Swarm: through the adapter vs the docker CLI alone.

Two services with the identical spec (created by the adapter, N replicas of IMAGE_V1, 1s health
check, same parallelism/monitor/order) are updated to IMAGE_V2 one after the other:

- ``adapter``: ``SwarmOrchestrator.update_image`` + ``wait_converged`` (poll 0.5s);
- ``cli``: ``docker service update --image IMAGE_V2 --detach=false --no-resolve-image`` (the CLI
  waits for convergence itself; ``--no-resolve-image`` because the adapter does not pin digests and
  no registry is reachable here).

Prints one JSON object with both wall times and the ratio adapter/cli. Usage::

    .venv/bin/python bench/swarm_rollout.py [--replicas 10] [--parallelism 2] [--monitor 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from scalewise.orchestrators.swarm import SwarmOrchestrator  # noqa: E402
from scalewise.spec import WorkloadSpec  # noqa: E402
from tests.support.docker_env import HTTP_CHECK, IMAGE_V1, IMAGE_V2  # noqa: E402

CLI_UPDATE = ["docker", "service", "update", "--quiet", "--detach=false", "--no-resolve-image"]


def make_spec(name: str, replicas: int, parallelism: int, monitor: float) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
            "target": "swarm",
            "image": IMAGE_V1,
            "labels": {"scalewise-bench": "1"},
            "replicas": {"min": 0, "max": replicas, "initial": replicas},
            "healthcheck": {"command": HTTP_CHECK, "interval": 1, "timeout": 1, "retries": 2},
            "update": {
                "parallelism": parallelism,
                "order": "start-first",
                "delay": 0,
                "failure_action": "rollback",
                "monitor": monitor,
            },
            "stop_grace_period": 1,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--monitor", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    subprocess.run(["bash", str(ROOT / "scripts" / "start-docker.sh")], check=True, capture_output=True)
    orch = SwarmOrchestrator.from_env()
    tag = uuid.uuid4().hex[:6]
    specs = {
        kind: make_spec(f"bench-{kind}-{tag}", args.replicas, args.parallelism, args.monitor)
        for kind in ("adapter", "cli")
    }
    try:
        for spec in specs.values():
            orch.apply(spec)
            result = orch.wait_converged(spec, timeout_s=args.timeout)
            if not result.converged:
                raise SystemExit(f"{spec.name} did not start: {result.reason} {result.detail}")

        spec = specs["adapter"]
        t0 = time.perf_counter()
        orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
        result = orch.wait_converged(spec, timeout_s=args.timeout, poll_s=0.5)
        adapter_s = time.perf_counter() - t0
        if not result.converged:
            raise SystemExit(f"adapter rollout did not converge: {result.reason} {result.detail}")

        spec = specs["cli"]
        t0 = time.perf_counter()
        subprocess.run(
            [*CLI_UPDATE, "--image", IMAGE_V2, spec.name],
            check=True,
            capture_output=True,
            timeout=args.timeout,
        )
        cli_s = time.perf_counter() - t0
        cli_state = orch.read(spec)
        if not (cli_state.image == IMAGE_V2 and cli_state.updated_replicas == args.replicas):
            raise SystemExit(f"cli rollout did not finish: {cli_state}")

        print(
            json.dumps(
                {
                    "bench": "swarm_rollout",
                    "replicas": args.replicas,
                    "parallelism": args.parallelism,
                    "monitor_s": args.monitor,
                    "adapter_s": round(adapter_s, 2),
                    "cli_s": round(cli_s, 2),
                    "ratio_adapter_over_cli": round(adapter_s / cli_s, 3),
                }
            )
        )
        return 0
    finally:
        for spec in specs.values():
            orch.remove(spec)
        orch.close()


if __name__ == "__main__":
    sys.exit(main())
