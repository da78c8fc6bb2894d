"""Create or update a scalewise work pool from prefect.yaml (definitions.work_pools).

    python deployments/pools.py docker [--name scalewise] [--workloads DIR] [--image TAG]

The pool gets Prefect's default base job template for its type, with the job variables declared in
prefect.yaml as defaults, plus what depends on this host:
  process     env SCALEWISE_HOME = the project directory (prefect.yaml's pull step goes there)
  docker      the workloads folder mounted read-only at /etc/scalewise/workloads, and the group of
              the Docker socket added to the (non-root) container user so the docker and swarm
              targets can use the engine
  kubernetes  the ConfigMap scalewise-workloads mounted read-only at /etc/scalewise/workloads in
              each flow run's pod (see deployments/kubernetes/worker.yaml)
Then `prefect deploy --all` (the deployments use the pool "scalewise") and start a worker:
`prefect worker start --pool scalewise`. Bad input exits 2 naming the field, changing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOCKET = Path("/var/run/docker.sock")
IN_IMAGE_WORKLOADS = "/etc/scalewise/workloads"


def declared_pools() -> dict[str, dict[str, Any]]:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    pools: dict[str, dict[str, Any]] = project["definitions"]["work_pools"]
    return pools


def job_variables(kind: str, workloads: Path, image: str | None) -> dict[str, Any]:
    """The declared job variables of pool type ``kind`` plus the host-dependent ones."""
    variables: dict[str, Any] = copy.deepcopy(declared_pools()[kind].get("job_variables") or {})
    if image and "image" in variables:
        variables["image"] = image
    env = variables.setdefault("env", {})
    if kind == "process":
        env.setdefault("SCALEWISE_HOME", str(ROOT))
    elif kind == "docker":
        env.setdefault("SCALEWISE_WORKLOADS", IN_IMAGE_WORKLOADS)
        variables.setdefault("volumes", []).append(f"{workloads}:{IN_IMAGE_WORKLOADS}:ro")
        if any(v.startswith(f"{SOCKET}:") for v in variables["volumes"]) and SOCKET.exists():
            kwargs = variables.setdefault("container_create_kwargs", {})
            kwargs.setdefault("group_add", [str(SOCKET.stat().st_gid)])
    return variables


def base_job_template(kind: str, variables: dict[str, Any]) -> dict[str, Any]:
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    template = asyncio.run(get_default_base_job_template_for_infrastructure_type(kind))
    if template is None:
        raise SystemExit(f"type: no worker for pool type {kind!r} is installed")
    properties = template["variables"]["properties"]
    for key, value in variables.items():
        if key not in properties:
            raise SystemExit(f"job_variables.{key}: not a variable of {kind} pools ({', '.join(sorted(properties))})")
        properties[key]["default"] = value
    if kind == "kubernetes":  # every flow run's pod reads the workload specs from the ConfigMap
        pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        pod["volumes"] = [{"name": "workloads", "configMap": {"name": "scalewise-workloads"}}]
        pod["containers"][0]["volumeMounts"] = [
            {"name": "workloads", "mountPath": IN_IMAGE_WORKLOADS, "readOnly": True}
        ]
    return template


def apply(name: str, kind: str, template: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
            return
        if pool.type != kind:
            raise SystemExit(f"name: pool {name!r} exists with type {pool.type!r}; delete it or pick another name")
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))


def main(argv: list[str] | None = None) -> int:
    pools = declared_pools()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("type", choices=sorted(pools), help="pool type (prefect.yaml definitions.work_pools)")
    parser.add_argument("--name", default="scalewise", help="pool name (default: scalewise)")
    parser.add_argument(
        "--workloads", type=Path, default=Path(os.environ.get("SCALEWISE_WORKLOADS", ROOT / "workloads")),
        help="workloads folder mounted into docker flow runs (default: $SCALEWISE_WORKLOADS or ./workloads)",
    )
    parser.add_argument("--image", help="image for docker/kubernetes flow runs (default: prefect.yaml's)")
    args = parser.parse_args(argv)
    kind = str(pools[args.type]["type"])
    if not args.name.strip():
        parser.exit(2, "name: must not be empty\n")
    if kind == "docker" and not args.workloads.is_dir():
        parser.exit(2, f"workloads: {args.workloads} is not a folder\n")
    try:
        template = base_job_template(kind, job_variables(args.type, args.workloads.resolve(), args.image))
        apply(args.name, kind, template)
    except SystemExit as exc:
        parser.exit(2, f"{exc}\n")
    print(f"work pool {args.name!r} ({kind}) is ready: prefect deploy --all && prefect worker start --pool {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
