"""Flow runs completed per second by 1, 2 and 4 Prefect process workers on one work pool, on each
Prefect database side by side (PostgreSQL, SQLite).

Usage: .venv/bin/python bench/worker_throughput.py [--workers 1,2,4] [--runs 12] [--databases postgres,sqlite]
       [--worker-limit N]
For each database: its own Prefect server, a process work pool made by ``deployments/pools.py process``,
the ``scale`` flow deployed to it with ``prefect deploy`` (as prefect.yaml declares it) and one Swarm
service. For each worker count: that many ``prefect worker start --type process`` (polling every 1 s),
then ``--runs`` runs of ``scale`` (``dry_run``: a real flow run that reads the workload and records a plan,
so runs on one workload do not queue on its lock) created at once; runs/s = completed runs / (last
run's end - creation). Each flow run is a process of its own (``python -m prefect.engine``): its imports
cost CPU on every run. ``--worker-limit`` caps each worker's concurrent runs (Prefect's default: none).
Prints JSON. No assertions on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import loadavg, start_local_server, summary, tear_down, use_api  # noqa: E402

PREFECT = str(Path(sys.executable).with_name("prefect"))


class Workers:
    """``n`` process workers on ``pool``, each a process group of its own."""

    def __init__(self, pool: str, n: int, api_url: str, logs: Path, limit: int | None) -> None:
        env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="1",
                   PREFECT_WORKER_PREFETCH_SECONDS="1")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = [logs / f"worker-{n}-{i}.log" for i in range(n)]
        for i, log in enumerate(self.logs):
            cmd = [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-{n}-{i}"]
            if limit:
                cmd += ["--limit", str(limit)]
            with log.open("wb") as out:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True))

    def wait_online(self, client: Any, pool: str, timeout_s: float = 180) -> float:
        t0 = time.monotonic()
        names = {f"{pool}-{len(self.procs)}-{i}" for i in range(len(self.procs))}
        while time.monotonic() - t0 < timeout_s:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')[-3000:]}")
            online = {w.name for w in client.read_workers_for_work_pool(pool) if w.status.value == "ONLINE"}
            if names <= online:
                return time.monotonic() - t0
            time.sleep(0.5)
        raise TimeoutError(f"workers {sorted(names)} not online within {timeout_s}s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def prefect_cli(api_url: str, *args: str) -> None:
    proc = subprocess.run([PREFECT, "--no-prompt", *args], cwd=ROOT, env=dict(os.environ, PREFECT_API_URL=api_url),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def one_count(client: Any, deployment_id: Any, workload: str, n_runs: int, timeout_s: float) -> dict[str, Any]:
    t0 = time.time()
    ids = [
        client.create_flow_run_from_deployment(
            deployment_id, parameters={"workload": workload, "replicas": 2, "dry_run": True,
                                       "reason": f"bench {i}"}).id
        for i in range(n_runs)
    ]
    created_s = time.time() - t0
    deadline = time.monotonic() + timeout_s
    final: dict[Any, Any] = {}
    while len(final) < len(ids) and time.monotonic() < deadline:
        for run_id in ids:
            if run_id not in final:
                run = client.read_flow_run(run_id)
                if run.state and run.state.is_final():
                    final[run_id] = run
        time.sleep(0.5)
    done = [r for r in final.values() if r.state.is_completed()]
    ends = [r.end_time.timestamp() for r in done if r.end_time]
    starts = [r.start_time.timestamp() for r in done if r.start_time]
    span = (max(ends) - t0) if ends else float("nan")
    return {
        "runs": n_runs, "completed": len(done), "not_completed": len(ids) - len(done),
        "create_s": round(created_s, 2), "all_done_after_s": round(span, 2),
        "runs_per_s": round(len(done) / span, 3) if ends else 0.0,
        "created_to_start_s": summary([s - t0 for s in starts]),
        "run_s": summary([r.total_run_time.total_seconds() for r in done]),
        "load_avg_after": loadavg(),
    }


def bench(database: str, counts: list[int], n_runs: int, limit: int | None, timeout_s: float) -> dict[str, Any]:
    import yaml

    from tests.support.docker_env import HTTP_CHECK, IMAGE_V1, ensure_docker, unique_name

    out: dict[str, Any] = {"load_avg_before": loadavg()}
    home = Path(tempfile.mkdtemp(prefix=f"bench-workers-{database}-"))
    t = time.monotonic()
    server = start_local_server(home / "prefect", database)
    out["prefect_server_start_s"] = round(time.monotonic() - t, 2)
    use_api(server.api_url)
    wdir = home / "workloads"
    wdir.mkdir()
    os.environ["SCALEWISE_WORKLOADS"] = str(wdir)
    ensure_docker()
    name = unique_name("wtp")
    (wdir / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "target": "swarm", "image": IMAGE_V1,
        "healthcheck": {"command": HTTP_CHECK, "interval": "1s", "timeout": "1s", "retries": 2},
        "replicas": {"min": 1, "max": 4, "initial": 1}, "stop_grace_period": "1s",
    }))
    pool = f"bench-{uuid.uuid4().hex[:6]}"
    from prefect.client.orchestration import get_client

    from flows.deploy import deploy
    from scalewise.audit import Trigger

    try:
        deploy(workload=name, reason="bench setup", trigger=Trigger(kind="api", actor="bench"))
        made = subprocess.run([sys.executable, str(ROOT / "deployments" / "pools.py"), "process", "--name", pool],
                              cwd=ROOT, env=dict(os.environ, PREFECT_API_URL=server.api_url),
                              capture_output=True, text=True, timeout=300)
        if made.returncode != 0:
            raise RuntimeError(made.stdout + made.stderr)
        prefect_cli(server.api_url, "deploy", "flows/scale.py:scale", "--name", pool, "--pool", pool)
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"scale/{pool}")
            for n in counts:
                workers = Workers(pool, n, server.api_url, home, limit)
                try:
                    online_s = workers.wait_online(client, pool)
                    out[f"{n}_workers"] = {"online_after_s": round(online_s, 2),
                                           **one_count(client, deployment.id, name, n_runs, timeout_s)}
                finally:
                    workers.stop()
    finally:
        tear_down(server, name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--runs", type=int, default=12, help="flow runs per worker count")
    parser.add_argument("--databases", default="postgres,sqlite")
    parser.add_argument("--worker-limit", type=int, default=None, help="concurrent runs per worker")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the runs of a count")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        parser.error("--workers: positive counts, comma-separated")
    if args.runs < 1:
        parser.error("--runs: at least 1")
    out: dict[str, Any] = {"runs": args.runs, "worker_limit": args.worker_limit, "cpus": os.cpu_count()}
    for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
        out[database] = bench(database, counts, args.runs, args.worker_limit, args.timeout)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
