"""A person approves a paused canary in the real Prefect UI: the test session's Prefect server serves its
UI, headless Chromium (Debian's `chromium`, driven by Playwright) opens the paused run's page, presses
Resume and answers the typed form that ``pause_flow_run(wait_for_input=ApprovalInput...)`` asks for;
the canary then promotes, and the action record (`scalewise history --json`) holds the answer exactly
as it was typed in the browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from scalewise import history
from tests.support.docker_env import IMAGE_V1, IMAGE_V2
from tests.support.procs import wait_for
from tests.test_canary_e2e import (
    Workload,
    analysis_step,
    cli,
    engine_images,
    paused_run,
    run_state,
)
from tests.test_canary_e2e import wl as wl  # the canary fixture: a workload deployed on the plain engine

pytestmark = [pytest.mark.prom, pytest.mark.prefect, pytest.mark.docker]

#: A loaded 2-core machine: the UI's first load (a few MB of JS from the test server) and its polling.
UI_TIMEOUT_MS = 120_000
COMMENT = "UI: error ratio 10% is the known batch job -- \"approved\" by O'Brien, ok ✓"
APPROVER = "carol (Prefect UI)"


@pytest.fixture()
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (scripts/install-system.sh installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@contextmanager
def screenshot_on_failure(page: Page, path: Path) -> Iterator[None]:
    """Any failure in the block carries a screenshot of the page (``path``) in its message."""
    try:
        yield
    except (AssertionError, PlaywrightError) as exc:
        try:
            page.screenshot(path=str(path), full_page=True)
            where = f"screenshot: {path}"
        except PlaywrightError as shot:
            where = f"no screenshot ({shot})"
        raise AssertionError(f"{exc}\n{where}; page: {page.url}") from exc


def resume_in_the_ui(page: Page, run_url: str, comment: str, approver: str) -> None:
    """Open a paused run's page, press Resume, approve with ``comment`` as ``approver``, submit."""
    page.goto(run_url, timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("Paused", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.get_by_role("button", name="Resume").click(timeout=UI_TIMEOUT_MS)
    form = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    expect(form).to_be_visible(timeout=UI_TIMEOUT_MS)

    def field(label: str) -> Locator:  # the form built from ApprovalInput's schema: a property per field
        return form.locator(".schema-form-property").filter(
            has=page.locator(".schema-form-property__label", has_text=re.compile(rf"^{label}\b"))
        )

    approve = field("Approve").get_by_role("switch")
    expect(approve).to_have_attribute("aria-checked", "true", timeout=UI_TIMEOUT_MS)  # the initial data
    field("Comment").locator("textarea").fill(comment)
    field("Approver").get_by_role("button", name="str", exact=True).click()
    field("Approver").locator("textarea").fill(approver)
    form.get_by_role("button", name="Submit").click()
    expect(form).to_be_hidden(timeout=UI_TIMEOUT_MS)


def test_a_paused_canary_is_approved_in_the_prefect_ui(wl: Workload, browser: Browser, tmp_path: Path) -> None:
    wl.error_ratio(0.1)  # between success (< 0.05) and failure (> 0.2): the analysis is Inconclusive
    wl.declare(strategy="canary", steps=[{"set_weight": 50}, analysis_step(count=1)])
    log = tmp_path / "canary.log"
    with log.open("wb") as out:  # `scalewise canary` as a user runs it, in its own process, waiting
        proc = subprocess.Popen(
            [sys.executable, "-m", "scalewise.cli", "canary", wl.name, IMAGE_V2, "--approval-timeout", "15m"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
        )
    try:
        approve_in_the_ui(wl, proc, log, tmp_path, browser)
    finally:
        if proc.poll() is None:
            proc.kill()


def approve_in_the_ui(wl: Workload, proc: subprocess.Popen[bytes], log: Path, tmp_path: Path, browser: Browser) -> None:
    paused = wait_for(lambda: paused_run(wl.name), 180, "the canary run to pause for approval", log)
    assert paused.state is not None and paused.state.state_details.run_input_keyset  # the typed Resume form
    assert engine_images(wl.name) == ([IMAGE_V1, IMAGE_V1], [IMAGE_V2])  # the canary serves while it waits
    run_url = f"{history.ui_base()}/runs/flow-run/{paused.id}"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    with screenshot_on_failure(page, tmp_path / "prefect-ui.png"):
        resume_in_the_ui(page, run_url, COMMENT, APPROVER)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert run_state(str(paused.id)).is_completed()
    assert engine_images(wl.name) == ([IMAGE_V2, IMAGE_V2], [])  # promoted
    shown = cli("history", wl.name, "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    record = [r for r in json.loads(shown.stdout) if r["operation"] == "canary"][-1]
    assert record["flow_run_id"] == str(paused.id) and record["run_url"] == run_url
    assert record["outcome"] == "succeeded" and record["analysis"]["phase"] == "Inconclusive"
    approval = record["approval"]
    assert (approval["approved"], approval["approver"], approval["comment"]) == (True, APPROVER, COMMENT)
    assert any(f"approved by {APPROVER}: {COMMENT}" in line for line in record["plan"]), record["plan"]
