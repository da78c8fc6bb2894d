"""The Prefect project's flows (the prefect.yaml entrypoints)."""

from flows.heartbeats import end_runs_without_joining_heartbeats

end_runs_without_joining_heartbeats()
