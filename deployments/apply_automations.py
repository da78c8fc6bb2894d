"""Create or update the Prefect automations declared in deployments/automations.yaml (idempotent, by name).

Usage: python deployments/apply_automations.py [--file PATH] [--deployment-suffix NAME] [--prune] [--dry-run]

Each ``run-deployment`` action names its deployment as ``"<flow>/<deployment>"``; it is resolved to
the deployment's id here, so apply after the deployments exist (``prefect deploy --all`` or
``deployments/serve.py``). Re-applying changes nothing but what changed; automations are matched by
name, and ``--prune`` deletes automations tagged ``scalewise`` that the file no longer declares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from scalewise.spec import read_yaml

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "automations.yaml"
MANAGED_TAG = "scalewise"


SECTIONS = ("automations", "run_health")


def load(path: Path = DEFAULT_FILE, section: str = "automations") -> list[dict[str, Any]]:
    """The automations declared under ``section`` (``automations``: operations started by events;
    ``run_health``: automations about flow runs, such as zombie-run detection)."""
    docs = read_yaml(path)  # strict: a duplicate key is an error naming the file, the key and its line
    data = docs[0] if docs else {}
    items = data.get(section) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a top-level '{section}:' list")
    names = [a.get("name") for a in items]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"{path}: every automation needs a unique name")
    return items


def _with_suffix(deployment: str, suffix: str | None) -> str:
    flow, _, name = deployment.partition("/")
    return f"{flow}/{suffix}" if suffix else f"{flow}/{name}"


async def build(item: dict[str, Any], client: Any, suffix: str | None = None) -> Any:
    """The validated :class:`AutomationCore` for one declared automation (deployments resolved)."""
    from prefect.events.schemas.automations import AutomationCore

    spec = json.loads(json.dumps(item))  # a deep copy
    for action in spec.get("actions", []):
        name = action.pop("deployment", None)
        if name is not None:
            deployment = await client.read_deployment_by_name(_with_suffix(name, suffix))
            action["source"] = "selected"
            action["deployment_id"] = str(deployment.id)
    tags = set(spec.get("tags") or []) | {MANAGED_TAG}
    spec["tags"] = sorted(tags)
    return AutomationCore.model_validate(spec)


def _comparable(automation: Any) -> Any:
    """The automation as plain data without ids (the server assigns them), for change detection."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in sorted(value.items()) if k != "id"}
        if isinstance(value, list):
            items = [strip(v) for v in value]
            return items
        return value

    data = automation.model_dump(mode="json")
    keep = ("name", "description", "enabled", "tags", "trigger", "actions", "actions_on_trigger", "actions_on_resolve")
    out = strip({k: data.get(k) for k in keep})
    for key in ("expect", "after", "for_each"):
        if isinstance(out["trigger"].get(key), list):
            out["trigger"][key] = sorted(out["trigger"][key])
    return out


async def apply(
    items: list[dict[str, Any]], suffix: str | None = None, prune: bool = False, dry_run: bool = False
) -> dict[str, list[str]]:
    """Create/update each automation by name; returns ``{"created": [...], "updated": [...], ...}``."""
    from prefect.client.orchestration import get_client

    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "deleted": []}
    async with get_client() as client:
        wanted = {item["name"]: await build(item, client, suffix) for item in items}
        for name, automation in wanted.items():
            existing = await client.read_automations_by_name(name)
            if not existing:
                if not dry_run:
                    await client.create_automation(automation)
                report["created"].append(name)
                continue
            first, *extra = existing
            for dup in extra:  # a name must mean one automation
                if not dry_run:
                    await client.delete_automation(dup.id)
                report["deleted"].append(f"{name} ({dup.id})")
            if _comparable(first) == _comparable(automation):
                report["unchanged"].append(name)
            else:
                if not dry_run:
                    await client.update_automation(first.id, automation)
                report["updated"].append(name)
        if prune:
            for automation in await client.read_automations():
                if MANAGED_TAG in (automation.tags or []) and automation.name not in wanted:
                    if not dry_run:
                        await client.delete_automation(automation.id)
                    report["deleted"].append(automation.name)
    return report


def apply_run_health(path: Path = DEFAULT_FILE) -> dict[str, list[str]]:
    """Apply the ``run_health`` automations (zombie-run detection); what serve.py and the tests call."""
    return asyncio.run(apply(load(path, "run_health")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="automations file")
    parser.add_argument("--deployment-suffix", default=None, help="use '<flow>/<this>' for every deployment")
    parser.add_argument("--prune", action="store_true", help="delete scalewise-tagged automations not declared")
    parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    args = parser.parse_args(argv)
    try:
        items = [item for section in SECTIONS for item in load(args.file, section)]
        report = asyncio.run(apply(items, args.deployment_suffix, args.prune, args.dry_run))
    except Exception as exc:  # a clear one-line error for the operator
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
