"""Served flow runs start warm: forked from a process that has already imported Prefect and the flows.

Prefect's runner (``serve``) starts each run of an in-memory flow with multiprocessing's "spawn"
(``prefect.flow_engine.run_flow_in_subprocess``): a fresh interpreter that imports Prefect and the
flow's modules again, 3.2-3.7 s of CPU per run, the largest part of a served run's start on 2 cores
(issue 10). With multiprocessing's "forkserver", one server process imports them once and every run
is forked from it. Each run is still its own process, so heartbeats, crash detection (the run_health
automation), cancellation and kills behave as before; only the imports are gone.

``SCALEWISE_RUN_START=spawn`` keeps Prefect's default.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import types
from collections.abc import Iterable
from typing import Any

ENV = "SCALEWISE_RUN_START"
METHODS = ("forkserver", "spawn")
#: Imported once by the fork server: the engine every run needs (the flows' modules are added).
ENGINE_MODULES = ("prefect.flow_engine", "prefect.engine", "prefect.runner")


def method() -> str:
    """How served runs start: ``forkserver`` (default) or ``spawn``; ValueError names the variable."""
    value = (os.environ.get(ENV) or "forkserver").strip().lower()
    if value not in METHODS:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(METHODS)}")
    return value


def enable(flow_modules: Iterable[str]) -> str:
    """Make Prefect start served runs with :func:`method`; returns the method in use.

    The fork server is started here (not at the first run), so its imports are paid once, up front,
    while serve registers its deployments, and it forks from a process with no threads."""
    how = method()
    _pickle_flows_by_reference()
    if how == "spawn":
        return how
    import prefect.flow_engine as flow_engine

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(sorted({*ENGINE_MODULES, *flow_modules}))
    # `run_flow_in_subprocess` asks its module's `multiprocessing` for the "spawn" context; it is the
    # only use of that name there (checked for Prefect 3.9). Give it the fork-server context instead.
    shim = types.SimpleNamespace(get_context=lambda _method=None: ctx, context=multiprocessing.context)
    setattr(flow_engine, "multiprocessing", shim)  # noqa: B010
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return how


def _pickle_flows_by_reference() -> None:
    """A run started from a flow object carries the flow pickled (cloudpickle). A module-level flow
    is not found by its function's qualified name (that name holds the Flow, not the function), so
    cloudpickle copies the function by value, without the module globals its string annotations name
    (``from __future__ import annotations``): Prefect then fails the run with "`ScaleModel` is not
    fully defined". Pickled as "attribute NAME of module M", the child imports the real flow instead."""
    import copyreg
    import sys

    from prefect.flows import Flow

    def by_reference(flow: Flow[Any, Any]) -> Any:  # copyreg's reducer: a string or a reduce tuple
        module = sys.modules.get(flow.fn.__module__)
        if module is not None and getattr(module, flow.fn.__name__, None) is flow:
            return getattr, (module, flow.fn.__name__)
        return object.__reduce_ex__(flow, 4)  # not a module-level flow: pickle it as Prefect would

    copyreg.pickle(Flow, by_reference)
