"""``scalewise ARGS`` in the test's own process (typer's CliRunner): for tests about the CLI's answers,
where a new Python process importing Prefect took seconds of CPU per call. An exception the CLI did not
turn into an exit code fails the call, as a traceback would have."""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from scalewise.cli import app


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run ``scalewise ARGS`` (in ``cwd`` if given; ``env`` added to the environment for the call)."""
    runner = CliRunner(env={"COLUMNS": "200", **(env or {})})
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        "".join(traceback.format_exception(result.exception)), result.output)
    return CliResult(result.exit_code, result.stdout, result.stderr)
