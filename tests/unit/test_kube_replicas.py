"""The Kubernetes adapter's pure parts of ``replicas``: the selector query and a pod as a replica."""

from __future__ import annotations

from typing import Any

import pytest

from scalewise.errors import PermanentError
from scalewise.orchestrators.kube import label_selector, pod_replica
from scalewise.policy.readings import ReplicaInfo


def test_label_selector_renders_labels_and_expressions() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "canary", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector(selector) == "a=1,b=2,tier in (web,api),env notin (dev),canary,!legacy"
    assert label_selector({}) == ""
    with pytest.raises(PermanentError, match="Near"):
        label_selector({"matchExpressions": [{"key": "x", "operator": "Near"}]})


def pod(name: str, phase: str, ready: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase}
    if ready is not None:
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": ready}]
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (pod("p", "Running", "True"), ReplicaInfo(id="p")),
        (pod("p", "Running", "False"), ReplicaInfo(id="p", ready=False)),
        (pod("p", "Pending"), ReplicaInfo(id="p", ready=False, pending=True)),
        ({"metadata": {"name": "p"}}, ReplicaInfo(id="p", ready=False, pending=True)),  # no status yet
        (pod("p", "Running", "True", deleting=True), None),  # terminating: not a replica any more
        (pod("p", "Succeeded"), None),
        (pod("p", "Failed"), None),
    ],
)
def test_pod_as_replica(given: dict[str, Any], expected: ReplicaInfo | None) -> None:
    assert pod_replica(given) == expected
