"""``train-forecast``: fit the Holt-Winters demand model of each predictive workload (daily schedule).

Per workload: >= ``min_days`` of its predictive metric from Prometheus (``query_range``), a fit
(statsmodels), and the model with its training window and held-out error in a Prefect Variable.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows.params import WorkloadName
from scalewise.errors import ScalewiseError
from scalewise.settings import workloads_path
from scalewise.spec import load_workloads
from tasks.forecast import fit_model, read_history, save_model

Days = Annotated[float, Field(gt=0, le=90)]


@flow(name="train-forecast", validate_parameters=True)
def train_forecast(
    workloads: list[WorkloadName] | None = None, days: Days = 7.0, min_days: Days = 7.0,
    step_s: Annotated[float, Field(ge=60, le=3600)] = 900.0,
) -> list[dict[str, Any]]:
    """Fit and store the demand model of predictive workloads; fails if any workload could not be trained.

    Args:
        workloads: Workloads to train (default: every workload whose predictive forecaster is holt_winters).
        days: Days of history to read from Prometheus.
        min_days: Refuse to train on less history than this, days.
        step_s: Resolution of the model, seconds.
    """
    logger = get_run_logger()
    specs = load_workloads(workloads_path())
    chosen = [
        s for s in specs.values()
        if s.autoscaling is not None and s.autoscaling.predictive is not None
        and (s.name in workloads if workloads is not None else s.autoscaling.predictive.forecaster == "holt_winters")
    ]
    unknown = sorted(set(workloads or []) - {s.name for s in chosen})
    results: list[dict[str, Any]] = [{"workload": n, "error": "no predictive section"} for n in unknown]
    for spec in chosen:
        try:
            model = fit_model(spec, read_history(spec, days, step_s, min_days), step_s)
            save_model(spec.name, model)
        except Exception as exc:
            logger.error("%s: training failed: %s: %s", spec.name, type(exc).__name__, exc)
            results.append({"workload": spec.name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        window = f"{model.trained_from.isoformat()} .. {model.trained_at.isoformat()}"
        logger.info("%s: trained on %d points (%s), RMSE %.4g", spec.name, model.points, window, model.error)
        results.append({"workload": spec.name, "trained_from": model.trained_from.isoformat(),
                        "trained_at": model.trained_at.isoformat(), "error_rmse": model.error, "points": model.points})
    failed = [r for r in results if "error" in r]
    if failed:
        raise ScalewiseError("; ".join(f"{r['workload']}: {r['error']}" for r in failed))
    return results
