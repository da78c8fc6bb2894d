"""Typed flow parameters shared by the operation flows (rendered as the Prefect UI's Run form)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

WorkloadName = Annotated[
    str, Field(min_length=1, max_length=53, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Workload name")
]
ReplicaCount = Annotated[int, Field(ge=0, le=10_000, description="Absolute replica count")]
Step = Annotated[int, Field(ge=1, le=10_000, description="How many replicas to add or remove")]
Image = Annotated[
    str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]*$", description="Image")
]
Timeout = Annotated[float, Field(gt=0, le=3600, description="Bounded wait for convergence, seconds")]
Reason = Annotated[str, Field(max_length=500, description="Why: recorded in the audit trail")]
MaxAge = Annotated[float | None, Field(default=None, gt=0, description="Refuse observations older than this (s)")]
ObservedAt = Annotated[datetime | None, Field(default=None, description="When the causing observation was made")]
HoldSeconds = Annotated[
    float | None,
    Field(default=None, ge=0, le=86400, description="Pin the count against the autoscaler this long, seconds "
          "(default: the spec's autoscaling.manual_hold; 0: no hold)"),
]
