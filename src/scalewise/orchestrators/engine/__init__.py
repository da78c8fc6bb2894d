"""Plain Docker engine adapter: one workload is a replica group of labelled containers.

Only this package, ``swarm.py`` and ``docker_common.py`` import the ``docker`` SDK. The engine has no service object, so
scalewise is the controller: it creates, replaces and removes the containers itself, and keeps all
of its state in container labels so that any new adapter instance (or a scalewise process started
after another one was killed mid-operation) reads everything back from the engine.

Containers and labels
---------------------
Replica containers are named ``<workload>-r<revision>-<slot>-<random>`` and carry:

=========================  ===========================================================
``scalewise.workload``     the workload name (with ``scalewise.managed=true``: ownership)
``scalewise.role``         ``replica``
``scalewise.revision``     revision number the container runs
``scalewise.image``        image of that revision
``scalewise.spec-hash``    hash of the container-shaping part of the spec (command, env,
                           ports, labels, health check, grace period; not image/replicas)
``scalewise.slot``         replica slot ``1..n`` (scale out fills the lowest free slots)
``scalewise.desired``      desired replica count when the container was created
``scalewise.revisions``    history: every revision's whole rendered spec and hash, newest last,
                           capped at :data:`MAX_REVISIONS` (``history.py``, as on Swarm)
``scalewise.healthcheck``  ``true`` when the container has a Docker health check
=========================  ===========================================================

Labels of a container cannot be changed, so the *current* desired count, revision, image and
history live on an **anchor**: a container created from the workload's image but never started
(``scalewise.role=anchor``), named ``<workload>-anchor-<seq>``. Every write of that record creates
a new anchor with ``seq + 1`` first and removes the older ones afterwards, so at every instant at
least one anchor exists and the one with the highest ``scalewise.anchor-seq`` wins. The anchor is
what keeps ``desired=0`` readable when no replica exists. (``docker container prune`` would delete
anchors: the adapter then falls back to the replica labels - revision of the oldest revision
present, desired = the ``scalewise.desired`` label of its newest container - and the next write
recreates the anchor.) Containers of Swarm tasks are never considered part of a group.

Replicas run with restart policy ``unless-stopped``, ``--init`` (so SIGTERM reaches the process and
stops take milliseconds, not the grace period), the spec's health check as ``CMD-SHELL`` with
nanosecond intervals, ``StopTimeout`` = the grace period, and host ports only for ``published``
ports. They use the default bridge network.

Version token and locking
-------------------------
``version`` is a hash over the sorted ``(container id, revision, desired label)`` of every container
of the group, anchors included. Any scale, update or foreign removal changes it; health changes do
not. Writes re-read the group and compare with ``expected_version`` first, raising
:class:`ConflictError` when it changed. This check is **not atomic** like Swarm's ``Version.Index``:
a writer outside scalewise (``docker rm``...) acting between the check and our writes is not
detected. Writers inside scalewise are serialised by a per-workload lock: a process-wide
``threading.Lock`` plus an ``flock`` on ``$SCALEWISE_STATE/locks/engine-<workload>.lock`` (default
``/tmp/scalewise``), so two scalewise processes on the same host do not interleave writes and a
process killed mid-update drops its lock with it (the next one then sees the leftovers and
reconciles them). Two hosts driving one remote engine are not serialised.

Rolling updates and crash recovery
----------------------------------
``update_image``/``rollback`` (and ``apply`` with a changed spec) run the rolling update here, and
synchronously: batches of ``update.parallelism`` (0 = all) old containers are replaced; with
``start-first`` (default) the new containers of a batch are started and must become healthy (Docker
health status ``healthy``, or running for ``update.monitor`` without a health check) before the old
ones of that batch are stopped, so the ready count never drops below desired. ``stop-first`` (also
forced when the spec publishes host ports, which two containers cannot share) stops the batch
first. The whole rollout is bounded by ``update.timeout``. A new container that turns unhealthy,
exits, restarts or times out fails the rollout: new containers are removed, old ones that were
already replaced are recreated (and awaited) before the healthy new ones go, the revision stays,
the anchor records ``update_state=rollback_completed`` and :class:`RolloutFailed` is raised.

A process killed mid-update leaves containers of two revisions. ``read`` then reports
``updating=True``; ``apply``, ``set_replicas``, ``wait_converged``, ``update_image`` and
``rollback`` first reconcile: if the newest revision's containers are all healthy and exactly
``desired`` of them exist, the update is finished (older containers removed, anchor moved to the new
revision); otherwise the newer containers are removed and missing old ones recreated (rolled back).
Reconciling also brings the count back to ``desired`` (creates missing, removes extra, starts
created-but-never-started containers), which makes every write safe to repeat.

Waiting
-------
``wait_converged`` first reconciles (skipped while another operation holds the lock: a live
update in another thread or process is watched, never rolled back; leftovers seen later while the
lock is free are reconciled then), then polls ``read`` (calling ``on_progress`` each time) until desired == ready
== updated == running and no second revision is present (``converged``) or the bound passes
(``timeout``). ``rolled_back``: *this* wait rolled back an interrupted update. As with the Swarm
adapter, a wait that starts after a rollback already finished (here: after ``update_image`` raised
:class:`RolloutFailed`) reports ``converged`` while ``state.update_state`` still says
``rollback_completed`` until the next scale or update.

Errors
------
SDK and transport errors are mapped as the table in :mod:`scalewise.orchestrators.docker_common`
says (only ``TransientError`` is ever retried), with ``broad_transient``: any SDK or transport failure
that is not an HTTP answer (``OSError``, ``requests`` errors, a bare ``DockerException``, e.g. no
engine when the client is created) is a ``TransientError``. An image that is missing and cannot be
pulled is a ``PermanentError`` with the engine's message.

Modules, one concept each
-------------------------
``labels`` (the label schema, read back as a group; pure), ``lock`` (the host lock), ``containers``
(the container calls), ``reconcile`` (the crash reconciler), ``rollout`` (the rollout engine),
``adapter`` (the protocol methods: lock, read, check, reconcile, write).
"""

from __future__ import annotations

from scalewise.orchestrators.engine.adapter import EngineOrchestrator
from scalewise.orchestrators.engine.containers import map_docker_error
from scalewise.orchestrators.engine.labels import (
    LABEL_ANCHOR_SEQ,
    LABEL_DESIRED,
    LABEL_HEALTHCHECK,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_REVISIONS,
    LABEL_ROLE,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    LABEL_UPDATE_MESSAGE,
    LABEL_UPDATE_STATE,
    LABEL_WORKLOAD,
    ROLE_ANCHOR,
    ROLE_REPLICA,
    template_hash,
)
from scalewise.orchestrators.engine.lock import workload_lock
from scalewise.orchestrators.history import MAX_REVISIONS

__all__ = [
    "LABEL_ANCHOR_SEQ",
    "LABEL_DESIRED",
    "LABEL_HEALTHCHECK",
    "LABEL_IMAGE",
    "LABEL_MANAGED",
    "LABEL_REVISION",
    "LABEL_REVISIONS",
    "LABEL_ROLE",
    "LABEL_SLOT",
    "LABEL_SPEC_HASH",
    "LABEL_UPDATE_MESSAGE",
    "LABEL_UPDATE_STATE",
    "LABEL_WORKLOAD",
    "MAX_REVISIONS",
    "ROLE_ANCHOR",
    "ROLE_REPLICA",
    "EngineOrchestrator",
    "map_docker_error",
    "template_hash",
    "workload_lock",
]
