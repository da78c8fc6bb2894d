"""How serve.py starts each run's process (deployments/warm_start.py): the setting and its errors."""

from __future__ import annotations

import pytest

from deployments.warm_start import ENV, method


@pytest.mark.parametrize(("value", "expected"), [(None, "forkserver"), ("", "forkserver"), ("spawn", "spawn"),
                                                 (" ForkServer ", "forkserver")])
def test_the_setting(value: str | None, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, value)
    assert method() == expected


def test_a_bad_setting_names_the_variable_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "fork")
    with pytest.raises(ValueError, match=r"SCALEWISE_RUN_START='fork': expected one of forkserver, spawn"):
        method()
