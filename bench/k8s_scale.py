"""Benchmark: scalewise scaling many Deployments, and one rolling update vs kubectl.

On a standalone real control plane (etcd, apiserver, controller-manager, scheduler, KWOK) with
``--nodes`` fake nodes:

1. ``--deployments`` Deployments x ``--replicas`` created through the adapter (``apply``), all ready.
2. Scale out: ``operations.scale(orch, spec, "absolute", --out-replicas)`` for every Deployment
   (a thread pool of ``--workers``; the adapter path the ``scale`` flow's task runs, without the
   Prefect run overhead: see bench/scale_flow.py for that), then ``wait_converged`` for all of them;
   scale back in to ``--replicas`` the same way. Timed to "every Deployment ready".
3. Rolling updates of a ``--rollout-replicas`` Deployment through ``operations.rolling_update``
   (update + polling wait with kubectl's rollout-status rules) vs ``kubectl set image`` +
   ``kubectl rollout status`` (a watch) of the same change on an identical Deployment (same strategy:
   maxSurge 25%, maxUnavailable 0); ``--rollout-rounds`` rounds, alternating who goes first, after
   the garbage collector finished the previous phase; medians and their ratio.

Usage: .venv/bin/python -m bench.k8s_scale [--nodes 200 --deployments 200 --replicas 5 ...]
Prints one JSON object. Bounded: every phase has a timeout and reports what it reached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalewise import operations
from scalewise.orchestrators.kube import KubernetesOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.kube import ControlPlane

IMAGE_V1 = "scalewise/busybox:1"
IMAGE_V2 = "scalewise/busybox:2"

def make_spec(name: str, namespace: str, replicas: int, max_replicas: int) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
            "target": "kubernetes",
            "image": IMAGE_V1,
            "replicas": {"min": 0, "max": max_replicas, "initial": replicas},
            "update": {"max_surge": "25%", "max_unavailable": 0, "timeout": 600},
            "kubernetes": {"namespace": namespace, "progress_deadline": 600},
        }
    )


def all_ready(
    orch: KubernetesOrchestrator, specs: list[WorkloadSpec], workers: int, timeout_s: float
) -> tuple[float, int]:
    """Wait (adapter ``wait_converged``, ``workers`` at a time) for every spec; (seconds, converged)."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s

    def wait(spec: WorkloadSpec) -> bool:
        left = max(1.0, deadline - time.monotonic())
        return orch.wait_converged(spec, timeout_s=left, poll_s=1.0).converged

    with ThreadPoolExecutor(workers) as pool:
        ok = sum(pool.map(wait, specs))
    return time.monotonic() - t0, ok


def scale_all(
    orch: KubernetesOrchestrator, specs: list[WorkloadSpec], replicas: int, workers: int, timeout_s: float
) -> dict[str, Any]:
    t0 = time.monotonic()
    conflicts = [0]
    lock = threading.Lock()

    def one(spec: WorkloadSpec) -> None:
        outcome = operations.scale(orch, spec, "absolute", replicas)
        with lock:
            conflicts[0] += outcome.conflicts

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, specs))
    writes_s = time.monotonic() - t0
    wait_s, ok = all_ready(orch, specs, workers * 2, timeout_s)
    return {
        "to_replicas": replicas,
        "writes_s": round(writes_s, 2),
        "all_ready_s": round(writes_s + wait_s, 2),
        "converged": ok,
        "of": len(specs),
        "conflicts_redecided": conflicts[0],
    }


def settle(cp: ControlPlane, ns: str, keep: set[str], timeout_s: float) -> float:
    """Wait until the namespace holds only pods of Deployments in ``keep`` (garbage collection done),
    so one measurement does not pay for the previous one's pod deletions."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        out = cp.kubectl("get", "pods", "-n", ns, "-o", "json")
        pods = json.loads(out.stdout)["items"]
        if all(p["metadata"].get("labels", {}).get("app.kubernetes.io/name") in keep for p in pods):
            break
        time.sleep(1.0)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--out-replicas", type=int, default=10)
    parser.add_argument("--rollout-replicas", type=int, default=50)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rollout-rounds", type=int, default=3, help="rolling updates each, alternating order")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of each phase, seconds")
    parser.add_argument("--skip-scale", action="store_true", help="only the rolling-update comparison")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"params": vars(args)}
    t = time.monotonic()
    cp = ControlPlane(nodes=args.nodes, startup_timeout=600)
    with cp:
        result["control_plane_start_s"] = round(time.monotonic() - t, 2)
        ns = cp.new_namespace("bench")
        orch = KubernetesOrchestrator.from_kubeconfig(cp.kubeconfig)
        try:
            if not args.skip_scale:
                specs = [
                    make_spec(f"w{i:03d}", ns, args.replicas, args.out_replicas) for i in range(args.deployments)
                ]
                t = time.monotonic()
                with ThreadPoolExecutor(args.workers) as pool:
                    list(pool.map(orch.apply, specs))
                writes = time.monotonic() - t
                wait_s, ok = all_ready(orch, specs, args.workers * 2, args.timeout)
                result["create"] = {
                    "deployments": len(specs), "replicas": args.replicas, "writes_s": round(writes, 2),
                    "all_ready_s": round(writes + wait_s, 2), "converged": ok,
                }
                result["scale_out"] = scale_all(orch, specs, args.out_replicas, args.workers, args.timeout)
                result["scale_in"] = scale_all(orch, specs, args.replicas, args.workers, args.timeout)
                result["pods_at_peak"] = len(specs) * args.out_replicas
                t = time.monotonic()
                for spec in specs:
                    orch.remove(spec)
                result["remove_s"] = round(time.monotonic() - t, 2)
                result["pods_gone_s"] = round(settle(cp, ns, set(), args.timeout) + result["remove_s"], 2)

            n = args.rollout_replicas
            ours = make_spec("roll-scalewise", ns, n, n)
            theirs = make_spec("roll-kubectl", ns, n, n)
            for spec in (ours, theirs):
                orch.apply(spec)
            all_ready(orch, [ours, theirs], 2, args.timeout)
            settle(cp, ns, {ours.name, theirs.name}, args.timeout)
            rounds: list[dict[str, Any]] = []
            for r in range(args.rollout_rounds):
                image = f"scalewise/busybox:r{r + 1}"
                timings: dict[str, Any] = {"image": image}
                order = ("scalewise", "kubectl") if r % 2 == 0 else ("kubectl", "scalewise")
                for who in order:
                    if who == "scalewise":
                        t = time.monotonic()
                        outcome, converge = operations.rolling_update(orch, ours, image, timeout_s=args.timeout)
                        timings["scalewise_s"] = round(time.monotonic() - t, 2)
                        timings["scalewise_ok"] = converge.converged and outcome.after.image == image
                    else:
                        t = time.monotonic()
                        cp.kubectl("set", "image", f"deployment/{theirs.name}", f"main={image}", "-n", ns)
                        status = subprocess.run(
                            [str(cp.bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig}", "rollout", "status",
                             f"deployment/{theirs.name}", "-n", ns, f"--timeout={int(args.timeout)}s"],
                            capture_output=True, text=True, timeout=args.timeout + 30, check=False,
                        )
                        timings["kubectl_s"] = round(time.monotonic() - t, 2)
                        timings["kubectl_ok"] = status.returncode == 0 and orch.read(theirs).image == image
                rounds.append(timings)
            ours_med = statistics.median(x["scalewise_s"] for x in rounds)
            theirs_med = statistics.median(x["kubectl_s"] for x in rounds)
            result["rolling_update"] = {
                "replicas": n,
                "strategy": "maxSurge 25%, maxUnavailable 0",
                "rounds": rounds,
                "scalewise_median_s": ours_med,
                "kubectl_median_s": theirs_med,
                "ratio_scalewise_over_kubectl": round(ours_med / theirs_med, 2) if theirs_med else None,
            }
        finally:
            orch.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
