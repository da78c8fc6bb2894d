"""``scalewise``: the command line. Every mutating command runs the same Prefect flow a deployment
runs (so it lands in the run history with trigger ``cli``), shows progress while it waits, and exits
non-zero with a clear message on failure."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scalewise.errors import ScalewiseError, UnreachableError
from scalewise.settings import DEFAULT_PREFECT_URL, enable_heartbeats, state_dir, workloads_path

# Before Prefect is imported (it reads its settings then): the CLI's flow runs send heartbeats, so
# a killed `scalewise rollout` is marked Crashed by the run_health automation.
enable_heartbeats()
# Start-up (issue 10: `--help` <= 0.5 s, `status` <= 1.0 s): pydantic looks for plugins in every installed
# distribution's entry points the first time a model is built (tens of ms); the CLI uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# Plain (click) help and usage errors: typer's rich help imports rich's markdown and traceback renderers
# (~0.1 s of CPU on every `--help`); tables and errors of the commands still print with rich.
app = typer.Typer(
    help="Elastic scaling and container orchestration as Prefect pipelines.", no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()
err = Console(stderr=True)

DryRun = Annotated[bool, typer.Option("--dry-run", help="Compute and record the plan; change nothing")]
Reason = Annotated[str | None, typer.Option(help="Why (recorded in the audit trail)")]
Timeout = Annotated[float, typer.Option(help="Bounded wait, seconds")]
Hold = Annotated[
    str | None,
    typer.Option(
        "--hold",
        help="On an autoscaled workload: pin the new count against the autoscaler this long (e.g. 10m; "
        "default: the spec's autoscaling.manual_hold; 0: no hold, the autoscaler may change it at once)",
    ),
]


def hold_seconds(value: str | None) -> float | None:
    """``--hold`` as seconds (None: the spec's default); a bad value exits 2 naming the option."""
    if value is None:
        return None
    from scalewise.durations import parse_duration

    try:
        seconds = float(parse_duration(value.strip()))
    except (ValueError, TypeError) as exc:
        fail(f"--hold: {exc}", 2)
    if not 0 <= seconds <= 86400:
        fail(f"--hold: must be between 0 and 24h, not {value!r}", 2)
    return seconds


def table_(*columns: str) -> Table:
    """A table whose cells wrap instead of being cut off; the workload column never wraps (names stay
    whole and greppable, however narrow the terminal: other columns give way); likewise a policy name."""
    out = Table()
    for column in columns:
        out.add_column(column, overflow="fold", no_wrap=column in ("workload", "policy"))
    return out


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


class _NoTracebackForKnownErrors(logging.Filter):
    """A flow that fails with a ScalewiseError has a clear message; the CLI shows it without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ScalewiseError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_known_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForKnownErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForKnownErrors())


PREFECT_HINT = "start one with 'scalewise server' (or scripts/up.sh), or set PREFECT_API_URL"


def prefect_unreachable(url: str, detail: str = "") -> UnreachableError:
    return UnreachableError("Prefect server", url, PREFECT_HINT, detail=detail)


def is_prefect_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the Prefect API did not answer at all."""
    import httpx

    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, httpx.TransportError) or "Failed to reach API" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def check_prefect(url: str) -> None:
    """Fail (exit 1, no traceback) when nothing answers at ``url``: name it and say what to do."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10.0)
    except httpx.TransportError as exc:
        fail(str(prefect_unreachable(url, f"{type(exc).__name__}: {exc}")))


@contextmanager
def prefect_api(check: bool = True) -> Iterator[str]:
    """Use PREFECT_API_URL if set, else the local server on 127.0.0.1:4200 (started if needed).

    With ``check``, a server that does not answer is a clear error (exit 1) before anything runs,
    and so is one that goes away while the command runs."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL") or str(PREFECT_API_URL.value() or "")
    if not url:
        from scalewise.local import start_server

        url = DEFAULT_PREFECT_URL
        with console.status("starting the local Prefect server (PostgreSQL; first start ~30 s)..."):
            start_server(state_dir() / "prefect", port=4200)
    elif check:
        check_prefect(url)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        try:
            yield url
        except Exception as exc:
            if check and not isinstance(exc, ScalewiseError) and is_prefect_unreachable(exc):
                fail(str(prefect_unreachable(url, f"{type(exc).__name__}: {exc}")))
            raise


def cli_trigger() -> Any:
    import getpass

    from scalewise.audit import Trigger

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Trigger(kind="cli", actor=user, detail=" ".join(["scalewise", *sys.argv[1:]])[:500])


def run_flow(fn: Callable[..., Any], title: str, **params: Any) -> None:
    """Run a flow in process, show progress, print the action record, exit non-zero on failure."""
    from prefect.exceptions import ParameterTypeError

    quiet_known_errors()
    with prefect_api():
        try:
            with console.status(f"{title}..."):
                record = fn(trigger=cli_trigger(), **params)
        except ParameterTypeError as exc:
            fail(f"bad parameter: {exc}", 2)
        except ScalewiseError as exc:
            fail(str(exc))
        except Exception as exc:  # a flow run that failed for another reason
            if is_prefect_unreachable(exc):
                raise  # prefect_api names the server and what to do
            fail(f"{type(exc).__name__}: {exc}")
    show_record(record)


def show_record(record: Any) -> None:
    from scalewise.history import _fmt

    b, a = record.before, record.after
    colour = {"succeeded": "green", "noop": "yellow", "planned": "cyan"}.get(record.outcome, "red")
    console.print(
        f"[bold]{record.operation}[/] {record.workload}: [{colour}]{record.outcome}[/]  "
        f"{_fmt(b.replicas, b.image, b.revision)} -> {_fmt(a.replicas, a.image, a.revision)}"
    )
    for step in record.plan:
        console.print(f"  - {step}")
    for row in (record.analysis or {}).get("measurements", []):
        line = f"    {row['time']} {row['metric']} = {row['value'] or '-'}: {row['phase']} {row['message']}"
        console.print(escape(line.rstrip()))
    if record.durations:
        console.print("  " + ", ".join(f"{k} {v:.2f}" for k, v in record.durations.items()), style="dim")


@app.command()
def validate(
    path: Annotated[Path | None, typer.Argument(help="Spec file or folder (default: $SCALEWISE_WORKLOADS)")] = None,
) -> None:
    """Validate workload specs; print them, or the file, field and reason of the first error."""
    from scalewise.spec import load_workloads

    try:
        specs = load_workloads(path or workloads_path())
    except ScalewiseError as exc:
        fail(str(exc))
    table = table_("workload", "target", "image", "replicas", "update")
    for s in specs.values():
        table.add_row(
            s.name, s.target, s.image, f"{s.replicas.min}..{s.replicas.max}",
            f"{s.update.order}, parallelism {s.update.parallelism}",
        )
    console.print(table)
    console.print(f"{len(specs)} workload(s) valid")


@app.command()
def deploy(
    workload: str,
    replicas: Annotated[int | None, typer.Option(help="Replica count")] = None,
    image: Annotated[str | None, typer.Option(help="Image override")] = None,
    dry_run: DryRun = False,
    reason: Reason = None,
    timeout: Timeout = 180.0,
) -> None:
    """Create a workload or bring it in line with its spec."""
    from flows.deploy import deploy as flow

    run_flow(flow, f"deploying {workload}", workload=workload, replicas=replicas, image=image,
             dry_run=dry_run, reason=reason or "deploy (cli)", timeout_s=timeout)


@app.command()
def scale(
    workload: str, replicas: int, dry_run: DryRun = False, reason: Reason = None, timeout: Timeout = 120.0,
    hold: Hold = None,
) -> None:
    """Scale to an absolute replica count (refused outside the workload's min/max)."""
    from flows.scale import scale as flow

    run_flow(flow, f"scaling {workload} to {replicas}", workload=workload, replicas=replicas,
             dry_run=dry_run, reason=reason or "manual scale (cli)", timeout_s=timeout, hold_s=hold_seconds(hold))


@app.command("scale-out")
def scale_out(
    workload: str,
    by: Annotated[int, typer.Option(help="Replicas to add")] = 1,
    dry_run: DryRun = False,
    reason: Reason = None,
    timeout: Timeout = 120.0,
    hold: Hold = None,
) -> None:
    """Add replicas (bounded by max)."""
    from flows.scale_out import scale_out as flow

    run_flow(flow, f"scaling {workload} out by {by}", workload=workload, by=by, dry_run=dry_run,
             reason=reason or "manual scale-out (cli)", timeout_s=timeout, hold_s=hold_seconds(hold))


@app.command("scale-in")
def scale_in(
    workload: str,
    by: Annotated[int, typer.Option(help="Replicas to remove")] = 1,
    dry_run: DryRun = False,
    reason: Reason = None,
    timeout: Timeout = 120.0,
    hold: Hold = None,
) -> None:
    """Remove replicas (bounded by min)."""
    from flows.scale_in import scale_in as flow

    run_flow(flow, f"scaling {workload} in by {by}", workload=workload, by=by, dry_run=dry_run,
             reason=reason or "manual scale-in (cli)", timeout_s=timeout, hold_s=hold_seconds(hold))


@app.command()
def rollout(
    workload: str,
    image: str,
    dry_run: DryRun = False,
    reason: Reason = None,
    timeout: Annotated[float | None, typer.Option(help="Bounded wait (default: spec update.timeout)")] = None,
) -> None:
    """Rolling update to a new image; rolled back automatically if it does not become healthy."""
    from flows.rolling_update import rolling_update as flow

    run_flow(flow, f"rolling {workload} out to {image}", workload=workload, image=image, dry_run=dry_run,
             reason=reason or "rolling update (cli)", timeout_s=timeout)


@app.command()
def rollback(
    workload: str,
    to: Annotated[int | None, typer.Option("--to", help="Revision number (default: previous)")] = None,
    dry_run: DryRun = False,
    reason: Reason = None,
    timeout: Timeout = 180.0,
) -> None:
    """Roll back to the previous (or a named) revision."""
    from flows.rollback import rollback as flow

    run_flow(flow, f"rolling {workload} back", workload=workload, to_revision=to, dry_run=dry_run,
             reason=reason or "rollback (cli)", timeout_s=timeout)


def load_steps(path: Path) -> Any:
    """A canary steps file (YAML: ``steps: [...]``, or a bare list); SpecError naming the file, the
    field and the reason."""
    from pydantic import TypeAdapter, ValidationError

    from scalewise.errors import SpecError
    from scalewise.policy.canary import CanaryStep, check_steps
    from scalewise.spec import read_yaml, spec_error_from_validation

    docs = read_yaml(path)
    data = docs[0] if docs else None
    if isinstance(data, dict) and set(data) == {"steps"}:
        data = data["steps"]
    if not isinstance(data, list):
        raise SpecError(str(path), "steps", "a canary's steps are a list (set_weight, pause, analysis)")
    try:
        return check_steps(TypeAdapter(list[CanaryStep]).validate_python(data))
    except ValidationError as exc:
        raise spec_error_from_validation(str(path), exc, "steps") from None
    except ValueError as exc:
        raise SpecError(str(path), "", str(exc)) from None


@app.command()
def canary(
    workload: str,
    image: str,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Steps (YAML: steps: [...]; default: the spec's update.steps)")
    ] = None,
    approval_timeout: Annotated[str, typer.Option(help="How long an approval may wait (e.g. 30m)")] = "1h",
    dry_run: DryRun = False,
    reason: Reason = None,
) -> None:
    """Canary a new image: walk the steps (set_weight, pause, analysis), then promote; a failed analysis,
    a rejection (`scalewise approve RUN --reject`) or an unready canary aborts it (exit 1)."""
    from flows.canary import canary as flow

    try:
        steps = load_steps(file) if file is not None else None
    except ScalewiseError as exc:
        fail(str(exc), 2)
    run_flow(flow, f"canary of {image} for {workload}", workload=workload, image=image, steps=steps,
             approval_timeout_s=int(_seconds(approval_timeout, "--approval-timeout")), dry_run=dry_run,
             reason=reason or "canary (cli)")


@app.command()
def promote(workload: str, dry_run: DryRun = False, reason: Reason = None) -> None:
    """Promote a workload's canary now: roll the stable to it, then remove the canary."""
    from flows.promote import promote as flow

    run_flow(flow, f"promoting the canary of {workload}", workload=workload, dry_run=dry_run,
             reason=reason or "promote (cli)")


@app.command()
def abort(workload: str, dry_run: DryRun = False, reason: Reason = None) -> None:
    """Remove a workload's canary; the stable is not touched."""
    from flows.abort import abort as flow

    run_flow(flow, f"aborting the canary of {workload}", workload=workload, dry_run=dry_run,
             reason=reason or "abort (cli)")


def load_analysis(path: Path) -> Any:
    """An analysis spec file (YAML: ``metrics: [...]``, or an ``analysis:`` block); SpecError naming the
    file, the field and the reason."""
    from pydantic import ValidationError

    from scalewise.errors import SpecError
    from scalewise.policy.analysis import AnalysisSpec
    from scalewise.spec import read_yaml, spec_error_from_validation

    docs = read_yaml(path)
    data = docs[0] if docs else None
    if isinstance(data, dict) and set(data) == {"analysis"}:
        data = data["analysis"]
    if not isinstance(data, dict):
        raise SpecError(str(path), "", "an analysis is a mapping with a 'metrics' list")
    try:
        return AnalysisSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(str(path), exc) from None


@app.command()
def analyze(
    workload: str,
    file: Annotated[Path, typer.Option("--file", "-f", help="Analysis spec (YAML: metrics: [...])")],
    on_inconclusive: Annotated[
        str, typer.Option(help="approve: pause for a person (scalewise approve / Prefect UI); fail")
    ] = "approve",
    approval_timeout: Annotated[str, typer.Option(help="How long an approval may wait (e.g. 30m)")] = "1h",
    duration: Annotated[str, typer.Option(help="How long metrics without a count run (e.g. 10m)")] = "10m",
    reason: Reason = None,
) -> None:
    """Measure a workload's metrics (Argo Rollouts' analysis semantics): Successful exits 0, Failed/Error
    exit 1; Inconclusive pauses the run until `scalewise approve RUN` (or the Prefect UI) answers."""
    from flows.analysis import analyze as flow

    try:
        spec = load_analysis(file)
    except ScalewiseError as exc:
        fail(str(exc), 2)
    if on_inconclusive not in ("approve", "fail"):
        fail(f"--on-inconclusive: {on_inconclusive!r} is not one of approve, fail", 2)
    run_flow(flow, f"analysing {workload}", workload=workload, analysis=spec, on_inconclusive=on_inconclusive,
             approval_timeout_s=int(_seconds(approval_timeout, "--approval-timeout")),
             duration_s=_seconds(duration, "--duration"), reason=reason or "analysis (cli)")


@app.command()
def approve(
    run: Annotated[
        str | None, typer.Argument(help="The paused flow run's id (printed by the run, shown in the UI)")
    ] = None,
    workload: Annotated[
        str | None, typer.Option(help="Instead of RUN: the workload whose one paused run to answer")
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve")] = False,
    comment: Annotated[str, typer.Option(help="Why (recorded in the audit trail)")] = "",
) -> None:
    """Answer a run paused for approval (an Inconclusive analysis, a canary pause): approve, or --reject to
    abort it. Name the run by its id, or by --workload when that workload has exactly one paused run."""
    from scalewise.approval import ApprovalError, ApprovalInput, parse_run_id, paused_run_of, resume

    who = cli_trigger().label()
    try:  # bad input: exit 2 before asking the server anything
        if (run is None) == (workload is None):
            raise ApprovalError("RUN: give a flow run id or --workload, one of the two")
        if run is not None:
            parse_run_id(run)
        elif workload is not None and not workload.strip():
            raise ApprovalError("--workload: must not be empty")
        ApprovalInput(approve=not reject, comment=comment, approver=who)
    except ApprovalError as exc:
        fail(str(exc), 2)
    except ValueError as exc:
        fail(f"--comment: {exc}", 2)
    with prefect_api():
        try:
            run_id = run if run is not None else paused_run_of(workload or "")
            name = resume(run_id, approve=not reject, comment=comment, approver=who)
        except ApprovalError as exc:
            fail(str(exc))
    console.print(f"{'rejected' if reject else 'approved'} {name} ({run_id}) as {who}")


@app.command()
def status(workload: Annotated[str | None, typer.Argument(help="One workload (default: all)")] = None) -> None:
    """Show each workload's replicas, readiness, image and revisions as its orchestrator reports them."""
    from scalewise import orchestrators
    from scalewise.spec import get_workload, load_workloads

    try:
        path = workloads_path()
        specs = [get_workload(path, workload)] if workload else list(load_workloads(path).values())
    except ScalewiseError as exc:
        fail(str(exc))
    table = table_("workload", "target", "desired", "ready", "image", "revision", "state", "revisions")
    failed: list[str] = []
    for spec in specs:
        try:
            orch = orchestrators.for_target(spec.target)
            if not orch.exists(spec):
                table.add_row(spec.name, spec.target, "-", "-", "-", "-", "not deployed", "")
                continue
            st = orch.read(spec)
            revs = " ".join(f"{r.number}:{r.image}" for r in orch.revisions(spec)[-5:])
            shown = st.update_state or ("updating" if st.updating else "stable")
            found = orch.read_canary(spec)  # canary replicas are never in desired/ready
            if found is not None:
                shown += f"; {found.summary()}"
            table.add_row(spec.name, spec.target, str(st.desired_replicas), str(st.ready_replicas), st.image,
                          str(st.revision), shown, revs)
        except ScalewiseError as exc:
            failed.append(f"{spec.name}: {exc}")
            table.add_row(spec.name, spec.target, "?", "?", "?", "?", "[red]error (below)[/]", "")
    console.print(table)
    for message in failed:
        err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    from scalewise.durations import parse_duration

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: {value!r} is neither a duration (e.g. 2h) nor an ISO time", 2)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@app.command()
def history(
    workload: Annotated[str | None, typer.Argument(help="One workload (default: all)")] = None,
    since: Annotated[str | None, typer.Option(help="A duration back from now (2h, 1d) or an ISO time")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV output")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """Who scaled what, when and why: the action records in Prefect's run history."""
    from scalewise import history as hist

    start = parse_since(since)
    with prefect_api():
        entries = hist.fetch(workload, start, limit)
    if as_json:
        sys.stdout.write(hist.to_json(entries) + "\n")
        return
    if as_csv:
        sys.stdout.write(hist.to_csv(entries))
        return
    table = table_(*hist.FIELDS[:-2], "run")
    for e in entries:
        row = e.flat()
        table.add_row(*(str(row[f]) for f in hist.FIELDS[:-2]), str(row["run_url"]))
    console.print(table)


@app.command()
def server(port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 4200) -> None:
    """Start the local Prefect server (PostgreSQL or SCALEWISE_DATABASE=sqlite; filesystem lease storage) if none
    answers; print its URL."""
    from scalewise.local import start_server

    srv = start_server(state_dir() / "prefect", port=port)
    console.print(srv.api_url)


@app.command()
def webhook(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8787,
    config: Annotated[
        Path | None, typer.Option("--config", help="Webhook config (default: $SCALEWISE_WEBHOOK_CONFIG)")
    ] = None,
) -> None:
    """Receive Alertmanager notifications and signed action requests; start the matching deployment runs
    (served by deployments/serve.py or prefect.yaml workers)."""
    import logging

    import uvicorn

    from scalewise.webhook.app import create_app
    from scalewise.webhook.config import load_config, resolve_credentials

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with prefect_api(check=False) as url:  # the receiver answers 503 (retryable) while Prefect is away
        try:
            cfg = load_config(config)
            application = create_app(cfg, resolve_credentials(cfg))
        except ScalewiseError as exc:
            fail(str(exc), 2)
        console.print(
            f"webhook receiver on http://{host}:{port} ({len(cfg.callers)} caller(s), {len(cfg.routes)} route(s)),"
            f" starting runs on {url}"
        )
        uvicorn.run(application, host=host, port=port, log_level="info")


# -- autoscaler: plan, watch, autoscaler -----------------------------------------------------------

WorkloadOpt = Annotated[
    list[str] | None, typer.Option("--workload", "-w", help="Only this workload (repeatable; default: all)")
]
MetricsPort = Annotated[
    int | None, typer.Option("--metrics-port", help="Serve self-metrics on 127.0.0.1:PORT/metrics (0: any port)")
]


def _seconds(value: str, what: str) -> float:
    from scalewise.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        fail(f"{what}: {exc}", 2)
    if seconds <= 0:
        fail(f"{what}: must be positive", 2)
    return seconds


def _serve_metrics(port: int | None) -> None:
    if port is None:
        return
    from scalewise import selfmetrics

    bound = selfmetrics.serve(port)
    console.print(f"self-metrics on http://127.0.0.1:{bound}/metrics")


@app.command()
def plan(
    workload: Annotated[str | None, typer.Argument(help="One workload (default: every autoscaled one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (with the full decision records)")] = False,
) -> None:
    """What the autoscaler would do now and why, each step with its reason code. Writes nothing
    (no run, no lock, no saved state)."""
    import json

    from flows.autoscale_loop import plan as compute

    with prefect_api():
        try:
            results = compute([workload] if workload else None)
        except ScalewiseError as exc:
            fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in results], indent=2) + "\n")
    else:
        for r in results:
            if r.current is None:
                colour = "yellow" if r.outcome == "skipped" else "red"
                console.print(f"[bold]{r.workload}[/]: [{colour}]{r.outcome}[/] ({r.reason}) {r.error or ''}")
                continue
            verb = f"scale {r.current} -> {r.desired}" if r.desired != r.current else f"keep {r.current}"
            colour = "cyan" if r.desired != r.current else "green"
            detail = f": {r.detail}" if r.detail else ""
            console.print(f"[bold]{r.workload}[/]: [{colour}]{verb}[/] ({r.reason}){detail}")
            for step in r.steps:
                console.print(f"  - {step}")
    if any(r.outcome == "failed" or (r.outcome == "held" and r.reason != "manual_hold") for r in results):
        raise typer.Exit(1)  # a manual hold is a normal state, not an error


@app.command()
def watch(
    workload: WorkloadOpt = None,
    interval: Annotated[str, typer.Option(help="Seconds between checks (0.2s-300s), e.g. 2s")] = "2s",
    rule: Annotated[
        list[str] | None, typer.Option("--rule", help="Explicit threshold WORKLOAD:METRIC>VALUE or <VALUE (repeatable)")
    ] = None,
    derived: Annotated[
        bool, typer.Option("--derived/--no-derived", help="Also watch target x (1 +/- tolerance) of every metric")
    ] = True,
    repeat: Annotated[str, typer.Option(help="Re-fire a crossing that persists after this long")] = "15s",
    metrics_port: MetricsPort = None,
    max_ticks: Annotated[int | None, typer.Option(help="Stop after this many checks (default: until Ctrl-C)")] = None,
) -> None:
    """Watch threshold expressions and emit scalewise.threshold.crossed events; the autoscale
    deployment's trigger then evaluates that workload at once."""
    import logging

    from scalewise.settings import workloads_path
    from scalewise.spec import load_workloads
    from scalewise.watcher import MAX_INTERVAL_S, MIN_INTERVAL_S, Watcher, parse_rule, prefect_emitter

    every = _seconds(interval, "--interval")
    if not MIN_INTERVAL_S <= every <= MAX_INTERVAL_S:
        fail(f"--interval: must be within {MIN_INTERVAL_S:g}s..{MAX_INTERVAL_S:g}s", 2)
    try:
        rules = [parse_rule(r) for r in rule or []]
    except ValueError as exc:
        fail(str(exc), 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = workloads_path()
    with prefect_api() as url:
        _serve_metrics(metrics_port)
        watcher = Watcher(
            lambda: load_workloads(path), prefect_emitter(), workloads=workload, rules=rules, derived=derived,
            repeat_s=_seconds(repeat, "--repeat"),
        )
        console.print(f"watching thresholds every {every:g}s; events to {url}")
        try:
            watcher.run(every, max_ticks=max_ticks)
        except KeyboardInterrupt:
            console.print("stopped")
        console.print(f"{watcher.emitted} event(s) emitted")


@app.command("autoscaler")
def autoscaler_loop(
    workload: WorkloadOpt = None,
    interval: Annotated[str, typer.Option(help="Seconds between ticks, e.g. 2s")] = "2s",
    metrics_port: MetricsPort = None,
    dry_run: DryRun = False,
    max_age: Annotated[float, typer.Option(help="Refuse to act on an observation older than this (s)")] = 60.0,
    max_ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks (default: until Ctrl-C)")] = None,
) -> None:
    """The fast path: evaluate every --interval in this process (no run or process per tick); a decision
    that changes replicas runs the autoscale flow in process (same tasks, lock, audit, saved state)."""
    import logging

    from flows.autoscale_loop import run_loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    every = _seconds(interval, "--interval")
    with prefect_api() as url:
        _serve_metrics(metrics_port)
        console.print(f"autoscaling every {every:g}s against {url}" + (" (dry run)" if dry_run else ""))
        try:
            ticks = run_loop(every, workload, dry_run=dry_run, max_ticks=max_ticks, max_observation_age_s=max_age)
        except KeyboardInterrupt:
            return
        console.print(f"{ticks} tick(s)")


_MODEL_FLAGS = {
    "capacity": "--capacity", "startup_s": "--startup", "interval_s": "--interval",
    "scrape_interval_s": "--scrape-interval", "scrape_lag_s": "--scrape-lag", "window_s": "--window",
}


def _moment(value: str, what: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed; UTC when no zone), Unix seconds, or ``now`` / ``now-7d``."""
    from scalewise.durations import parse_duration

    text = value.strip()
    try:
        if text.startswith("now"):
            back = text[3:].lstrip()
            if back and not back.startswith("-"):
                raise ValueError("use now or now-DURATION")
            return datetime.now(UTC) - timedelta(seconds=parse_duration(back[1:]) if back else 0.0)
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError as exc:
        fail(f"{what}: cannot read {value!r} as a time (ISO 8601, Unix seconds or now-7d): {exc}", 2)
    raise AssertionError("unreachable")


@app.command()
def backtest(
    trace: Annotated[
        Path | None, typer.Argument(help="CSV trace 'timestamp_s,requests' (or use --prometheus-query)")
    ] = None,
    workload: Annotated[str, typer.Option(help="Workload whose replicas and autoscaling section are used")] = "",
    policy: Annotated[
        Path | None, typer.Option(help="YAML autoscaling block used instead of the workload's own")
    ] = None,
    capacity: Annotated[float, typer.Option(help="Requests/s one ready replica serves")] = 1.0,
    startup: Annotated[float, typer.Option(help="Seconds from scale-up to a ready replica")] = 60.0,
    interval: Annotated[float, typer.Option(help="Seconds between autoscaler decisions")] = 15.0,
    scrape_interval: Annotated[float, typer.Option(help="Prometheus scrape interval, seconds")] = 15.0,
    scrape_lag: Annotated[float, typer.Option(help="Age of the newest usable scrape, seconds")] = 15.0,
    window: Annotated[float, typer.Option(help="Metric averaging window, seconds")] = 60.0,
    prometheus_query: Annotated[
        str | None, typer.Option(help="PromQL giving requests/s, read over --start..--end (SCALEWISE_PROMETHEUS_URL)")
    ] = None,
    start: Annotated[str, typer.Option(help="Range start: ISO 8601, Unix seconds or now-7d")] = "now-1d",
    end: Annotated[str, typer.Option(help="Range end")] = "now",
    step: Annotated[str, typer.Option(help="Range step, e.g. 60s")] = "60s",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: need vs replicas per policy, worst interval")] = None,
) -> None:
    """Replay a demand trace through the workload's autoscaling policy, the HPA defaults (same target)
    and an oracle (no under-provisioning at the least cost); score each. Changes nothing."""
    import json

    from pydantic import ValidationError

    from scalewise import backtest as bt
    from scalewise.spec import get_workload

    if not workload:
        fail("--workload: required (the workload whose replicas and autoscaling are backtested)", 2)
    try:
        model = bt.ServiceModel(
            capacity=capacity, startup_s=startup, interval_s=interval, scrape_interval_s=scrape_interval,
            scrape_lag_s=scrape_lag, window_s=window,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        flag = _MODEL_FLAGS.get(str(first["loc"][0]), str(first["loc"][0]))
        fail(f"{flag}: {str(first['msg']).removeprefix('Value error, ')}", 2)
    try:
        spec = get_workload(workloads_path(), workload)
        chosen = bt.policies_for(spec, bt.load_policy(policy) if policy else None)
        span = (_moment(start, "--start"), _moment(end, "--end"), _seconds(step, "--step"))
        demand = bt.load_demand(trace, prometheus_query, *span)
        result = _run_backtest(bt.backtest, demand, spec, model, chosen)
    except ScalewiseError as exc:
        fail(str(exc), 2)
    if plot is not None:
        from scalewise.backtest.plot import draw

        try:
            draw(result, plot)
        except ImportError:
            fail("--plot: needs matplotlib (pip install 'scalewise[plot]')", 2)
        except OSError as exc:
            fail(f"--plot: cannot write {plot}: {exc.strerror or exc}", 2)
    out = result.to_json()
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    _show_backtest(out, plot)


def _run_backtest(run: Callable[..., Any], *args: Any) -> Any:
    """Run with a progress bar on stderr for long traces (never on stdout: --json stays clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    )
    task = bar.add_task("simulating decisions", total=None)
    with bar:
        return run(
            *args,
            on_start=lambda total: bar.update(task, total=total, visible=total >= 20_000),
            progress=lambda n: bar.advance(task, n),
        )


def _show_backtest(out: dict[str, Any], plot: Path | None) -> None:
    tr = out["trace"]
    console.print(
        f"[bold]{tr['name']}[/]: {tr['points']} points of {tr['interval_s']:g}s ({tr['duration_h']:g} h), "
        f"mean {tr['rate_mean']:g} req/s, max {tr['rate_max']:g} req/s; workload {out['workload']}"
    )
    table = table_(
        "policy", "under min", "under %", "unserved %", "replica-h", "x oracle", "actions",
        "thetaU %", "thetaO %", "tauU %", "tauO %", "instab. %",
    )
    for name, p in out["policies"].items():
        s = p["spec"]
        table.add_row(
            name, f"{p['under_provisioned_minutes']:g}", f"{p['under_provisioned_pct']:g}", f"{p['unserved_pct']:g}",
            f"{p['replica_hours']:g}", f"{p['replica_hours_vs_oracle']:g}x", str(p["scale_actions"]),
            f"{s['under_accuracy_pct']:g}", f"{s['over_accuracy_pct']:g}", f"{s['under_timeshare_pct']:g}",
            f"{s['over_timeshare_pct']:g}", f"{s['instability_pct']:g}",
        )
    console.print(table)
    for name, p in out["policies"].items():
        if p["reasons"]:
            console.print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in p["reasons"].items()), style="dim")
    run = out["run"]
    console.print(f"{run['decisions']} decisions in {run['seconds']:g}s ({run['decisions_per_s']}/s)", style="dim")
    if plot is not None:
        console.print(f"plot: {plot}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
