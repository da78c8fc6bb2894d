"""The architecture stays in the layout: every module of ``scalewise``, ``flows`` and ``tasks`` sits in a
layer of the import-linter ``layers`` contract (``lint-imports`` checks the direction; this checks that no
module is left outside it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def layers_contract() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = [c for c in config["contracts"] if c["type"] == "layers"]
    assert len(layered) == 1, "one layers contract"
    return layered[0]


def layer_modules() -> set[str]:
    names: set[str] = set()
    for layer in layers_contract()["layers"]:  # type: ignore[union-attr]
        names.update(re.sub(r"[()\s]", "", part) for part in re.split(r"[|:]", layer))
    return names


def project_modules() -> list[str]:
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "flows").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    modules = []
    for file in files:
        parts = list(file.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "src":
            parts = parts[1:]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(parts))
    return sorted(modules)


def test_every_module_sits_in_a_layer() -> None:
    layers = layer_modules()
    roots = {"scalewise", "flows", "tasks"}

    def covered(module: str) -> bool:
        parts = module.split(".")
        return any(".".join(parts[:i]) in layers for i in range(1, len(parts) + 1))

    outside = [m for m in project_modules() if m not in roots and not covered(m)]
    assert outside == [], f"modules outside the layers contract (add them to a layer in pyproject.toml): {outside}"


def test_layer_names_are_modules_or_marked_optional() -> None:
    modules = set(project_modules())
    for layer in layers_contract()["layers"]:  # type: ignore[union-attr]
        for part in re.split(r"[|:]", layer):
            name = part.strip()
            if not name.startswith("("):
                assert name in modules, f"layer {name!r} names no module"
