"""``fake_target``: a :class:`TargetHarness` over the in-memory :class:`FakeOrchestrator` (no component)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalewise.orchestrators.fake import BROKEN_IMAGE, FakeOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.targets import TargetHarness, make_cleanup, serve, spec_factory


@pytest.fixture
def fake_target() -> Iterator[TargetHarness]:
    orchestrator = FakeOrchestrator()
    created: list[WorkloadSpec] = []
    yield from serve(
        TargetHarness(
            orchestrator=orchestrator,
            make_spec=spec_factory("docker", created),
            cleanup=make_cleanup(orchestrator, created),
            broken_image=BROKEN_IMAGE,
            live_env=orchestrator.live_env,
        )
    )
