"""Decision records: everything needed to explain a decision and to re-run it later."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from scalewise.policy.config import AutoscalingSpec
from scalewise.policy.decide import Decision, PolicyState, Step, decide, seed_state


class DecisionRecord(BaseModel):
    """Inputs + steps + result + config version of one decision. JSON round-trips exactly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str = ""
    config_version: str
    spec: AutoscalingSpec
    state_before: PolicyState
    decision: Decision

    @property
    def steps(self) -> list[Step]:
        return self.decision.steps

    @classmethod
    def of(
        cls, spec: AutoscalingSpec, state_before: PolicyState | None, decision: Decision, workload: str = ""
    ) -> DecisionRecord:
        return cls(
            workload=workload,
            config_version=spec.config_hash(),
            spec=spec,
            state_before=(
                state_before
                if state_before is not None
                else seed_state(spec, decision.current, decision.inputs.now)
            ),
            decision=decision,
        )


def replay(record: DecisionRecord) -> Decision:
    """Re-run :func:`decide` from the stored inputs; equals ``record.decision`` for a faithful record."""
    inputs = record.decision.inputs
    if record.spec.config_hash() != record.config_version:
        raise ValueError("the record's spec does not match its config_version")
    return decide(
        record.spec,
        inputs.bounds,
        inputs.readings,
        inputs.current,
        inputs.ready,
        record.state_before,
        inputs.now,
        inputs.replicas,
        inputs.forecast,
    )
