"""A workspace's maximum of executions running at once (`Workspace.max_running_executions`, else
WORKSPACE_MAX_RUNNING_EXECUTIONS; 0 is unlimited). More are not refused: they wait `queued`, in
order, and run as slots free.

Why PostgreSQL and not a Redis semaphore: the slots are the workspace's `running` rows themselves,
so there is no second count to keep in step. A worker that is killed holds its slot exactly as long
as its row stays `running`, until the reaper re-queues or fails it (its lease expires); nothing
leaks and nothing is freed early. The claim of a capped workspace locks the workspace's row
(`FOR NO KEY UPDATE`: it does not block the inserts of executions, whose foreign key takes only a
key-share lock) and then, in a new statement (so it sees every claim committed before the lock),
moves the execution to `running` only if

    running executions of the workspace + queued ones older than it  <  cap

Older queued executions (by id: uuid7, creation time) go first, so the queue of a workspace is
FIFO (a resumed execution keeps its id, so what has started finishes before what has not). An
execution that may not run yet is marked `deferred_at` and its task ends: it holds no worker slot
and has no task message out (the reaper does not re-publish it). Every transition out of `running`
(completion, failure, cancel, suspension, a lease the reaper takes back) and the cancel of a queued
execution wakes the oldest deferred one of its workspace after its commit: it clears the mark and
publishes its task again. Race: a claim that marks itself deferred just as a slot frees could miss
the wake-up (the waker found no mark yet); so the claim tries once more after its mark is committed.
Of "mark, then count" and "free, then look for marks", one always sees the other. The reaper sweeps
too (`release_deferred`: a wake-up lost in a crash, a cap raised or removed in the admin).

A parent waiting for its sub-execution, and a batch waiting for its items, are
`waiting_for_sub_execution`, not `running`: they hold no slot, so a cap of 1 runs a parent, then its
child, then the parent again, and never deadlocks. Other workspaces never wait: the lock, the counts
and the wake-ups are per workspace, and a workspace without a cap takes none of them (its claim is
the one conditional UPDATE it always was).
"""

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from core.metrics import EXECUTIONS_DEFERRED
from executions.models import Execution

_SET_RUNNING = """
   SET state = 'running', attempt = e.attempt + 1, lease_owner = %(worker)s, lease_expires_at = %(expires)s,
       updated_at = %(now)s, started_at = COALESCE(e.started_at, %(now)s), deferred_at = NULL
"""

# Fast path: the claim of an execution whose workspace has no cap, in one statement as before.
_CLAIM_UNCAPPED_SQL = f"""
UPDATE executions_execution e {_SET_RUNNING}
  FROM accounts_workspace w
 WHERE e.id = %(id)s AND e.state = 'queued' AND w.id = e.workspace_id
   AND COALESCE(w.max_running_executions, %(default_cap)s) = 0
RETURNING e.*
"""

_LOCK_WORKSPACE_SQL = """
SELECT e.workspace_id, COALESCE(w.max_running_executions, %(default_cap)s)
  FROM executions_execution e JOIN accounts_workspace w ON w.id = e.workspace_id
 WHERE e.id = %(id)s AND e.state = 'queued'
   FOR NO KEY UPDATE OF w
"""

# Each count stops at the cap, so a long queue costs no more than a short one.
_CLAIM_CAPPED_SQL = f"""
UPDATE executions_execution e {_SET_RUNNING}
 WHERE e.id = %(id)s AND e.state = 'queued'
   AND (SELECT count(*) FROM (SELECT 1 FROM executions_execution
                               WHERE workspace_id = %(workspace)s AND state = 'running' LIMIT %(cap)s) AS r)
     + (SELECT count(*) FROM (SELECT 1 FROM executions_execution
                               WHERE workspace_id = %(workspace)s AND state = 'queued' AND id < %(id)s
                               LIMIT %(cap)s) AS q) < %(cap)s
RETURNING e.*
"""

_WAKE_SQL = """
UPDATE executions_execution SET deferred_at = NULL, dispatched_at = %(now)s
 WHERE id IN (SELECT id FROM executions_execution
               WHERE workspace_id = %(workspace)s AND state = 'queued' AND deferred_at IS NOT NULL
               ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id
"""

# Per workspace with deferred executions: its cap, its running and its undeferred queued ones (whose
# task is out, so they take the next slots themselves).
_DEFERRED_WORKSPACES_SQL = """
SELECT d.workspace_id, COALESCE(w.max_running_executions, %(default_cap)s),
       (SELECT count(*) FROM executions_execution r WHERE r.workspace_id = d.workspace_id AND r.state = 'running'),
       (SELECT count(*) FROM executions_execution q
         WHERE q.workspace_id = d.workspace_id AND q.state = 'queued' AND q.deferred_at IS NULL)
  FROM (SELECT DISTINCT workspace_id FROM executions_execution
         WHERE state = 'queued' AND deferred_at IS NOT NULL) AS d
  JOIN accounts_workspace w ON w.id = d.workspace_id
"""

SWEEP_MAX_PER_WORKSPACE = 500


def running_cap(workspace) -> int:
    """The workspace's maximum of running executions; 0 is unlimited."""
    if workspace.max_running_executions is not None:
        return workspace.max_running_executions
    return settings.WORKSPACE_MAX_RUNNING_EXECUTIONS


def _first(sql: str, params: dict) -> Execution | None:
    return next(iter(Execution.objects.raw(sql, params)), None)


def claim_uncapped(params: dict) -> Execution | None:
    """The claim when the workspace has no cap (no lock); None if it has one or the row is not queued."""
    execution = _first(_CLAIM_UNCAPPED_SQL, {**params, "default_cap": settings.WORKSPACE_MAX_RUNNING_EXECUTIONS})
    if execution is not None:
        execution.capped = False  # its end wakes nobody (release_deferred covers a cap set meanwhile)
    return execution


def _claim_under_lock(params: dict, defer: bool) -> tuple[Execution | None, bool]:
    """(the claimed execution, whether it is now deferred), in one transaction under the workspace's lock."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_LOCK_WORKSPACE_SQL, {**params, "default_cap": settings.WORKSPACE_MAX_RUNNING_EXECUTIONS})
            row = cursor.fetchone()
        if row is None:
            return None, False  # not queued (any more): another message of it won
        workspace_id, cap = row
        if cap == 0:
            execution = claim_uncapped(params)
            return execution, False
        execution = _first(_CLAIM_CAPPED_SQL, {**params, "workspace": workspace_id, "cap": cap})
        if execution is not None:
            execution.capped = True
            return execution, False
        if defer:
            Execution.objects.filter(id=params["id"], state="queued").update(deferred_at=params["now"])
            EXECUTIONS_DEFERRED.labels(workspace_id=str(workspace_id)).inc()
        return None, True


def claim_capped(params: dict) -> Execution | None:
    """The claim when the workspace has a cap: run now if a slot is free for it, else stay queued,
    deferred, with no task out; a slot that frees wakes it."""
    execution, deferred = _claim_under_lock(params, defer=True)
    if not deferred:
        return execution
    # The mark is committed: a slot freed from now on finds it. One freed before: this try sees it.
    execution, _ = _claim_under_lock(params, defer=False)
    return execution


def wake_deferred(workspace_id, limit: int = 1) -> list:
    """Clear the deferral of the workspace's `limit` oldest deferred executions; their ids, whose
    tasks the caller publishes (executions/services.py), oldest first (RETURNING has no order)."""
    with connection.cursor() as cursor:
        cursor.execute(_WAKE_SQL, {"workspace": workspace_id, "limit": limit, "now": timezone.now()})
        return sorted(execution_id for (execution_id,) in cursor.fetchall())


def release_deferred() -> list:
    """The reaper's sweep: per workspace, wake as many deferred executions as it has free slots
    that no queued execution with its task out will take (all of them, up to 500, when the cap
    was removed). Returns the ids woken."""
    woken = []
    with connection.cursor() as cursor:
        cursor.execute(_DEFERRED_WORKSPACES_SQL, {"default_cap": settings.WORKSPACE_MAX_RUNNING_EXECUTIONS})
        rows = cursor.fetchall()
    for workspace_id, cap, running, undeferred in rows:
        free = SWEEP_MAX_PER_WORKSPACE if cap == 0 else min(cap - running - undeferred, SWEEP_MAX_PER_WORKSPACE)
        if free > 0:
            woken += wake_deferred(workspace_id, free)
    return woken


class LimitsCollector:
    """Gauges read at scrape time: executions running and deferred, per workspace that has any.
    Served by /metrics (ops/metrics.py)."""

    def collect(self):
        running = GaugeMetricFamily(
            "skillrun_executions_running", "Executions running now, per workspace", labels=["workspace_id"]
        )
        deferred = GaugeMetricFamily(
            "skillrun_executions_deferred",
            "Executions queued behind their workspace's running cap now, per workspace",
            labels=["workspace_id"],
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT workspace_id, count(*) FILTER (WHERE state = 'running'),"
                " count(*) FILTER (WHERE state = 'queued' AND deferred_at IS NOT NULL)"
                " FROM executions_execution WHERE state IN ('running', 'queued') GROUP BY workspace_id"
            )
            for workspace_id, running_count, deferred_count in cursor.fetchall():
                if running_count:
                    running.add_metric([str(workspace_id)], running_count)
                if deferred_count:
                    deferred.add_metric([str(workspace_id)], deferred_count)
        yield running
        yield deferred
