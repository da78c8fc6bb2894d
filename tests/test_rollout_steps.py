"""A rolling update on the plain engine shows in its flow run as one task run per batch (issue 9 item 2),
and a batch hit by a transient engine error is retried as a step: it reuses what the lost call
created, so the workload ends with exactly its replicas on the new image. Real dockerd, real Prefect."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.deploy import deploy
from flows.rolling_update import rolling_update
from scalewise import history, orchestrators
from scalewise.errors import RolloutFailed, TransientError
from scalewise.local import LocalServer
from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.orchestrators.engine.containers import Containers
from scalewise.spec import parse_workload
from tests.support.docker_env import IMAGE_BROKEN, IMAGE_V1, IMAGE_V2, health_check, unique_name
from tests.support.prefect_env import task_runs
from tests.support.target_engine import replica_ids
from tests.support.targets import docker_cli

pytestmark = [pytest.mark.prefect]


def spec_doc(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "target": "docker",
        "image": IMAGE_V1,
        "healthcheck": health_check(timeout_s=5, retries=3),
        "replicas": {"min": 1, "max": 4, "initial": 3},
        "update": {"parallelism": 2, "order": "start-first", "monitor": "1s", "timeout": "120s"},
        "stop_grace_period": "1s",
    }


@pytest.fixture()
def workload(docker_engine: None, prefect_server: LocalServer, workloads_dir: Path) -> Iterator[str]:
    name = unique_name("steps")
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name)))
    yield name
    with contextlib.suppress(Exception):
        orchestrators.for_target("docker").remove(parse_workload(spec_doc(name)))
    orchestrators.reset()


def batches(flow_run_id: str | None) -> list[tuple[str, str, int]]:
    """(name, final state, run count) of the flow run's batch task runs, in batch order."""
    assert flow_run_id
    runs = [r for r in task_runs(flow_run_id) if r.name.startswith("batch-")]
    return sorted((r.name, r.state.type.value if r.state else "", r.run_count) for r in runs)


def images(name: str) -> list[str]:
    """The image of every running replica container of ``name`` (docker CLI, not the adapter)."""
    return sorted(image_of(cid) for cid in replica_ids(name))


def image_of(cid: str) -> str:
    out = docker_cli("inspect", "-f", "{{.Config.Image}}", cid)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_each_batch_of_an_engine_rolling_update_is_a_task_run(workload: str) -> None:
    deploy(workload=workload)
    record = rolling_update(workload=workload, image=IMAGE_V2)
    assert record.outcome == "succeeded" and record.after.image == IMAGE_V2
    done = batches(record.flow_run_id)
    # 3 replicas, parallelism 2: two batches (slots 1,2 then 3), each Completed at its first run.
    assert [(n.split("-slots-")[0], s, c) for n, s, c in done] == [
        ("batch-1-of-2", "COMPLETED", 1), ("batch-2-of-2", "COMPLETED", 1),
    ], done
    assert images(workload) == [IMAGE_V2] * 3

    # A broken image fails in its first batch: that task run is Failed, none runs after it, the
    # workload is rolled back to the old image with all its replicas.
    with pytest.raises(RolloutFailed):
        rolling_update(workload=workload, image=IMAGE_BROKEN)
    failed = history.fetch(workload)[-1].record
    assert failed.outcome == "rolled_back", failed
    assert [(n.split("-slots-")[0], s) for n, s, _ in batches(failed.flow_run_id)] == [("batch-1-of-2", "FAILED")]
    assert images(workload) == [IMAGE_V2] * 3


class LossyContainers(Containers):
    """The real containers API, except that the first new replica's creation is reported lost (a
    transient error) after the engine made it: the retried step must find and reuse it."""

    lose = 1

    def create_replica(self, *args: Any, **kwargs: Any) -> str:
        cid = super().create_replica(*args, **kwargs)
        if self.lose:
            self.lose -= 1
            raise TransientError("docker workload: the engine's answer to create was lost (injected)")
        return cid


def test_a_batch_hit_by_a_transient_error_is_retried_and_reuses_what_it_made(
    workload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(workload=workload)
    orchestrators.reset()
    lossy = EngineOrchestrator.from_env()
    lossy.containers = LossyContainers(lossy.api)
    monkeypatch.setitem(orchestrators._cache, "docker", lossy)
    record = rolling_update(workload=workload, image=IMAGE_V2)
    assert record.outcome == "succeeded", record
    assert LossyContainers.lose == 1 and lossy.containers.lose == 0  # the fault did happen
    done = batches(record.flow_run_id)
    assert [(n.split("-slots-")[0], s, c) for n, s, c in done] == [
        ("batch-1-of-2", "COMPLETED", 2), ("batch-2-of-2", "COMPLETED", 1),
    ], done
    # Exactly 3 replicas, all new: the container made before the lost answer was reused, not doubled.
    assert images(workload) == [IMAGE_V2] * 3
    assert len(replica_ids(workload, running_only=False)) == 3
