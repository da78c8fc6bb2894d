"""Benchmark: the webhook receiver.

(a) latency: POST /v1/actions (scale, alternating 2/1 replicas on a real Swarm service) -> 202 ->
    flow run started by the served runner (deployments/serve.py) -> replica write done, read back from
    Prefect (the run's start time, the action record's timestamps and durations); p50/p95.
(b) throughput: authenticated (bearer) requests on loopback for ``--seconds`` or ``--requests``,
    whichever first, distinct Idempotency-Keys, ``dry_run: true`` (nothing scales; the runner is
    stopped, so runs stay Scheduled); then the same against a caller rate-limited to ``--limit``/s,
    counting 429s. Every 202 is checked to have its flow run in Prefect.

(c) rates: real scale requests sent open-loop at each of ``--rates`` requests/s (``--per-rate`` each),
    round-robin over ``--fanout`` Swarm services: request -> replica write p50/p95 with its stages
    (accept, accepted -> run start = serve's poll + process spawn, lock_s, run start -> write), and how
    many accepted requests did not end in a completed run with its action record (lost). A request
    superseded by a newer absolute one for its workload (its run Cancelled before it started, naming
    the newer run) is counted as superseded, not lost, and its latency runs to the write of the run
    that acted for it (the end of the chain of pointers); the stages are of the acting runs only.

Usage: .venv/bin/python -m bench.webhook_bench [--databases postgres,sqlite] [--parts latency,rates,throughput]
       [--latency-runs 10] [--rates 1,5,20] [--per-rate 20] [--fanout 5] [--seconds 10] [--requests 2000]
       [--no-coalesce] [--inline]
For each database in turn: its own Prefect server (temporary folder), ``deployments/serve.py`` and the
receiver in-process (uvicorn thread). Prints one JSON object. No assertions on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import drain_prefect, loadavg, start_local_server, summary, use_api  # noqa: E402

TOKEN = "bench-token-" + uuid.uuid4().hex
LIMITED = "bench-limited-" + uuid.uuid4().hex


def config(limit: float, inline: bool = False) -> Any:
    from scalewise.webhook.config import parse_config

    return parse_config({
        "run_inline": ["scale", "scale-out", "scale-in"] if inline else [],
        "callers": [
            {"name": "bench", "token_env": "UNUSED", "rate_limit": {"per_second": 100_000, "burst": 100_000}},
            {"name": "limited", "token_env": "UNUSED2", "rate_limit": {"per_second": limit, "burst": int(limit)}},
        ],
    })


def credentials() -> dict[str, Any]:
    from scalewise.webhook.config import Credentials

    return {"bench": Credentials.model_validate({"token": TOKEN}),
            "limited": Credentials.model_validate({"token": LIMITED})}


def latency(url: str, workload: str, runs: int) -> dict[str, Any]:
    import httpx
    from prefect.client.orchestration import get_client

    from scalewise import history

    rows: list[dict[str, float]] = []
    with httpx.Client(base_url=url, timeout=60) as http, get_client(sync_client=True) as client:
        for i in range(runs):
            target = 2 if i % 2 == 0 else 1
            body = {"workload": workload, "action": "scale", "replicas": target, "reason": f"bench {i}"}
            sent = time.time()
            resp = http.post("/v1/actions", json=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                                 "Idempotency-Key": f"lat-{i}-{uuid.uuid4()}"})
            accepted = time.time()
            if resp.status_code != 202:
                raise RuntimeError(f"request {i}: {resp.status_code} {resp.text}")
            run_id = resp.json()["flow_run_id"]
            deadline = time.monotonic() + 120
            run = client.read_flow_run(run_id)
            while not (run.state and run.state.is_final()) and time.monotonic() < deadline:
                time.sleep(0.2)
                run = client.read_flow_run(run_id)
            if not (run.state and run.state.is_completed()):
                raise RuntimeError(f"run {run_id} ended {run.state}")
            record = next(e.record for e in reversed(history.fetch(workload)) if e.record.flow_run_id == run_id)
            assert run.start_time is not None and record.finished_at is not None
            started = run.start_time.timestamp()
            # the write is the last step before the bounded wait: written = finished - wait_s
            written = record.finished_at.timestamp() - record.durations.get("wait_s", 0.0)
            rows.append({
                "accept_s": accepted - sent,
                "accepted_to_run_start_s": started - accepted,
                "run_start_to_write_done_s": written - started,
                "request_to_write_done_s": written - sent,
                "write_s": record.durations.get("write_s", 0.0),
                "converge_wait_s": record.durations.get("wait_s", 0.0),
                "flow_total_s": record.durations.get("total_s", 0.0),
            })
    return {"runs": len(rows), **{k: summary([r[k] for r in rows]) for k in rows[0]}}


async def _hammer(url: str, token: str, workload: str, seconds: float, limit_requests: int,
                  concurrency: int) -> dict[str, Any]:
    import httpx

    codes: dict[int, int] = {}
    accepted: list[str] = []
    latencies: list[float] = []
    sent = 0
    stop_at = time.monotonic() + seconds
    body = json.dumps({"workload": workload, "action": "scale-out", "dry_run": True}).encode()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < stop_at and sent < limit_requests:
            sent += 1
            t0 = time.perf_counter()
            resp = await client.post("/v1/actions", content=body, headers={
                "Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex,
                "Content-Type": "application/json"})
            latencies.append(time.perf_counter() - t0)
            codes[resp.status_code] = codes.get(resp.status_code, 0) + 1
            if resp.status_code == 202:
                accepted.append(resp.json()["flow_run_id"])

    t0 = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    return {"elapsed_s": round(elapsed, 2), "requests": sent, "codes": {str(k): v for k, v in sorted(codes.items())},
            "requests_per_s": round(sent / elapsed, 1), "accepted_per_s": round(len(accepted) / elapsed, 1),
            "latency_s": summary(latencies), "accepted_ids": accepted}


async def _direct(deployment: str, workload: str, seconds: float, limit_requests: int, concurrency: int) -> dict:
    """Baseline without the receiver: arun_deployment straight against the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import arun_deployment

    sent = 0
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    params = {"workload": workload, "dry_run": True}

    async with get_client() as client:
        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < stop_at and sent < limit_requests:
                sent += 1
                t0 = time.perf_counter()
                await arun_deployment(deployment, client=client, parameters=params, timeout=0, as_subflow=False,
                                      idempotency_key=uuid.uuid4().hex)
                latencies.append(time.perf_counter() - t0)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    return {"elapsed_s": round(elapsed, 2), "runs_created": sent, "runs_per_s": round(sent / elapsed, 1),
            "latency_s": summary(latencies)}


async def _refused(url: str, seconds: float, limit_requests: int, concurrency: int) -> dict:
    """The receiver alone: authenticated, valid JSON, refused with 404 (unknown workload) before Prefect is called."""
    import httpx

    sent = 0
    codes: dict[int, int] = {}
    stop_at = time.monotonic() + seconds
    body = json.dumps({"workload": "does-not-matter", "action": "scale-out", "by": 0}).encode()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < stop_at and sent < limit_requests:
            sent += 1
            resp = await client.post("/v1/actions", content=body, headers={"Authorization": f"Bearer {TOKEN}"})
            codes[resp.status_code] = codes.get(resp.status_code, 0) + 1

    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    return {"elapsed_s": round(elapsed, 2), "requests": sent, "codes": {str(k): v for k, v in codes.items()},
            "requests_per_s": round(sent / elapsed, 1)}


def verify_runs(ids: list[str]) -> int:
    """How many of ``ids`` exist as flow runs in Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found = 0
    with get_client(sync_client=True) as client:
        for i in range(0, len(ids), 200):
            chunk = [uuid.UUID(x) for x in ids[i:i + 200]]
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=200)
            found += len(runs)
    return found


def throughput(url: str, token: str, workload: str, seconds: float, requests: int, concurrency: int) -> dict:
    out = asyncio.run(_hammer(url, token, workload, seconds, requests, concurrency))
    ids = out.pop("accepted_ids")
    out["accepted"] = len(ids)
    out["accepted_with_flow_run"] = verify_runs(ids)
    return out


async def _open_loop(url: str, workloads: list[str], rate: float, count: int) -> list[dict[str, Any]]:
    """Send ``count`` scale requests at ``rate``/s on a fixed schedule (open loop: a slow answer does not
    delay the next request), round-robin over ``workloads``, each alternating 2 and 1 replicas."""
    import httpx

    sent_rows: list[dict[str, Any]] = []
    turn: dict[str, int] = {}

    async def one(i: int, client: httpx.AsyncClient) -> None:
        workload = workloads[i % len(workloads)]
        k = turn[workload] = turn.get(workload, -1) + 1
        body = {"workload": workload, "action": "scale", "replicas": 2 if k % 2 == 0 else 1,
                "reason": f"bench rate {rate:g}/s #{i}"}
        sent = time.time()
        try:
            resp = await client.post("/v1/actions", json=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Idempotency-Key": f"rate-{rate:g}-{i}-{uuid.uuid4().hex}"})
            code, run_id = resp.status_code, (resp.json().get("flow_run_id") if resp.status_code == 202 else None)
        except httpx.HTTPError as exc:
            code, run_id = 0, None
            print(f"request {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sent_rows.append({"i": i, "workload": workload, "sent": sent, "accepted": time.time(), "code": code,
                          "run_id": run_id})

    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)) as client:
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i, client)))
        await asyncio.gather(*tasks)
    return sorted(sent_rows, key=lambda r: r["i"])


def at_rate(url: str, workloads: list[str], rate: float, count: int, drain_s: float) -> dict[str, Any]:
    """Real scale requests at ``rate``/s: request -> replica write, per stage; every 202 must end in a
    completed run with its action record (else it is counted lost)."""
    from prefect.client.orchestration import get_client

    from scalewise import history

    t_start = time.monotonic()
    sent = asyncio.run(_open_loop(url, workloads, rate, count))
    send_s = time.monotonic() - t_start
    accepted = [r for r in sent if r["code"] == 202]
    codes: dict[str, int] = {}
    for r in sent:
        codes[str(r["code"])] = codes.get(str(r["code"]), 0) + 1
    deadline = time.monotonic() + drain_s
    runs: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        pending = {r["run_id"] for r in accepted}
        while pending and time.monotonic() < deadline:
            for run_id in list(pending):
                run = client.read_flow_run(run_id)
                if run.state and run.state.is_final():
                    runs[run_id] = run
                    pending.discard(run_id)
            if pending:
                time.sleep(0.5)
    drained_s = time.monotonic() - t_start
    records = {}
    for workload in workloads:
        for entry in history.fetch(workload):
            if entry.record.flow_run_id is not None:
                records[str(entry.record.flow_run_id)] = entry.record
    from scalewise.webhook.coalesce import parse_superseded

    def acting(run_id: str) -> tuple[str, int]:
        """The run that acted for ``run_id``: itself, or the end of its chain of supersede pointers."""
        hops = 0
        while hops < len(runs):
            got = runs.get(run_id)
            state = got.state if got is not None else None
            pointer = parse_superseded(state.message) if state is not None and state.is_cancelled() else None
            if pointer is None:
                return run_id, hops
            run_id, hops = pointer[1], hops + 1
        return run_id, hops

    rows: list[dict[str, float]] = []
    served_latency: list[float] = []
    superseded_latency: list[float] = []
    lost: list[str] = []
    for r in accepted:
        run_id, hops = acting(r["run_id"])
        got, record = runs.get(run_id), records.get(str(run_id))
        state = got.state if got is not None else None
        if got is None or got.start_time is None or state is None or not state.is_completed() \
                or record is None or record.finished_at is None:
            via = f" (superseded, acting run {run_id})" if hops else ""
            lost.append(f"{r['run_id']}{via}: {state.type.value if state else 'not final'}")
            continue
        started = got.start_time.timestamp()
        written = record.finished_at.timestamp() - record.durations.get("wait_s", 0.0)
        served_latency.append(written - r["sent"])
        if hops:
            superseded_latency.append(written - r["sent"])
            continue
        rows.append({
            "request_to_write_done_s": written - r["sent"],
            "accept_s": r["accepted"] - r["sent"],
            "accepted_to_run_start_s": started - r["accepted"],
            "lock_s": record.durations.get("lock_s", 0.0),
            "run_start_to_write_done_s": written - started,
            "write_s": record.durations.get("write_s", 0.0),
            "converge_wait_s": record.durations.get("wait_s", 0.0),
        })
    out: dict[str, Any] = {
        "rate_per_s": rate, "requests": count, "workloads": len(workloads), "codes": codes,
        "accepted": len(accepted), "completed_with_record": len(rows), "superseded": len(superseded_latency),
        "lost": len(lost), "lost_runs": lost[:10],
        "send_s": round(send_s, 2), "all_final_after_s": round(drained_s, 2), "load_avg_after": loadavg(),
    }
    if served_latency:  # every request served, superseded ones to the write of the run that acted for them
        out["request_to_write_done_s"] = summary(served_latency)
    if superseded_latency:
        out["superseded_request_to_write_done_s"] = summary(superseded_latency)
    if rows:
        out.update({f"acting_{k}" if k == "request_to_write_done_s" else k: summary([row[k] for row in rows])
                    for k in rows[0]})
    return out


def bench_database(database: str, args: argparse.Namespace, parts: list[str]) -> dict[str, Any]:
    import docker
    import yaml

    from flows.deploy import deploy
    from scalewise.audit import Trigger
    from scalewise.webhook.app import create_app
    from tests.support.docker_env import HTTP_CHECK, IMAGE_V1, ensure_docker, unique_name
    from tests.support.prefect_env import Served
    from tests.support.webhook_env import UvicornThread

    tmp = Path(tempfile.mkdtemp(prefix=f"sw-webhook-bench-{database}-"))
    result: dict[str, Any] = {"load_avg_before": loadavg()}
    t = time.monotonic()
    server = start_local_server(tmp / "prefect", database)
    result["prefect_server_start_s"] = round(time.monotonic() - t, 2)
    use_api(server.api_url)
    workloads = tmp / "workloads"
    workloads.mkdir()
    os.environ["SCALEWISE_WORKLOADS"] = str(workloads)
    ensure_docker()
    names = [unique_name("whb") for _ in range(max(1, args.fanout))]
    for name in names:
        (workloads / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "target": "swarm", "image": IMAGE_V1,
            "healthcheck": {"command": HTTP_CHECK, "interval": "1s", "timeout": "1s", "retries": 2},
            "replicas": {"min": 1, "max": 4, "initial": 1}, "stop_grace_period": "1s",
            "update": {"parallelism": 1, "order": "start-first", "monitor": "2s", "timeout": "60s"},
        }))
    served: Served | None = None
    receiver: UvicornThread | None = None
    try:
        for name in names:
            deploy(workload=name, reason="bench setup", trigger=Trigger(kind="api", actor="bench"))
        # no autoscale schedule: its runs (every 15 s by default) would compete with the measured ones
        os.environ["SCALEWISE_AUTOSCALE_INTERVAL"] = "off"
        served = Served(server.api_url, workloads, tmp / "serve.log")
        served.wait_registered(["scale/scalewise", "scale-out/scalewise"])
        app = create_app(config(args.limit, args.inline), credentials(), workloads=workloads)
        result["inline"] = args.inline
        if args.no_coalesce:  # the baseline: every accepted request acts, in lock order (as before coalescing)
            async def no_coalescing(plan: Any, run: Any) -> dict[str, Any]:
                return {}

            app.state.receiver._coalesce = no_coalescing
        result["coalescing"] = not args.no_coalesce
        receiver = UvicornThread(app).start()
        workers = app.state.receiver.workers
        if workers is not None:  # --inline: measure the warm receiver, not its start-up imports
            t = time.monotonic()
            while not workers.warmed() and time.monotonic() - t < 300:
                time.sleep(0.2)
            result["inline_warm_up_s"] = round(time.monotonic() - t, 2)
        if "latency" in parts:
            result["a_latency"] = latency(receiver.url, names[0], args.latency_runs)
        if "rates" in parts:
            result["rates"] = {}
            for rate in [float(x) for x in args.rates.split(",") if x.strip()]:
                result["rates"][f"{rate:g}/s"] = at_rate(receiver.url, names, rate, args.per_rate, args.drain)
        if "throughput" in parts:
            served.stop()  # (b) measures the receiver and the Prefect API, not the runner
            served = None
            result["b_throughput"] = throughput(receiver.url, TOKEN, names[0], args.seconds, args.requests,
                                                args.concurrency)
            result["b_prefect_direct_baseline"] = asyncio.run(
                _direct("scale-out/scalewise", names[0], args.seconds, args.requests, args.concurrency))
            result["b_receiver_only_refused_404"] = asyncio.run(
                _refused(receiver.url, min(args.seconds, 5.0), args.requests, args.concurrency))
            result["b_rate_limited"] = {"limit_per_s": args.limit, "burst": int(args.limit), **throughput(
                receiver.url, LIMITED, names[0], min(args.seconds, 5.0), args.requests, args.concurrency)}
    finally:
        if receiver is not None:
            receiver.stop()
        if served is not None:
            served.stop()
        client = docker.from_env()
        for name in names:
            for svc in client.services.list(filters={"name": name}):
                svc.remove()
        drain_prefect()
        server.stop()
        server.stop_database()
    result["load_avg_after"] = loadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="postgres,sqlite", help="one Prefect server on each, in turn")
    parser.add_argument("--parts", default="latency,rates,throughput", help="which measurements")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--rates", default="1,5,20", help="requests/s for the open-loop part")
    parser.add_argument("--per-rate", type=int, default=20, help="requests sent at each rate")
    parser.add_argument("--fanout", type=int, default=5, help="workloads the rate requests go to, round-robin")
    parser.add_argument("--drain", type=float, default=600.0, help="seconds to wait for every accepted run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=float, default=3.0, help="rate limit (req/s) of the limited caller")
    parser.add_argument("--inline", action="store_true",
                        help="the receiver runs the scaling runs itself (run_inline), serve.py stays up for the rest")
    parser.add_argument("--no-coalesce", action="store_true",
                        help="baseline: the receiver does not coalesce absolute requests (every one acts)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"latency", "rates", "throughput"})
    if unknown:
        parser.error(f"--parts: unknown {unknown}")
    result: dict[str, Any] = {"started": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                              "args": vars(args)}
    for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
        result[database] = bench_database(database, args, parts)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
