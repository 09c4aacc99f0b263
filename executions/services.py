"""Writes of the execution core: creation, dispatch, and every state transition.

Each transition is one conditional UPDATE (`WHERE state IN (...)`, and for a worker also
`AND attempt = <its attempt>`), so two workers or two API calls can never both win it.
"""

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.credits import ZERO, settle_credits
from executions.events import append_event
from executions.models import SUSPENDED_STATES, TERMINAL_STATES, Execution, ExecutionState

logger = logging.getLogger(__name__)

RUN_EXECUTION_TASK = "workers.tasks.run_execution"


# --- creation and dispatch --------------------------------------------------------------------


def dispatch_on_commit(execution_id) -> None:
    """Publish the task message once the row is committed; the row itself is the outbox."""

    def publish():
        current_app.send_task(RUN_EXECUTION_TASK, args=[str(execution_id)])

    transaction.on_commit(publish)


@transaction.atomic
def create_execution(*, workspace, principal, source, inputs, agent_version=None, skill_version=None,
                     parent=None, start_payload=None, **fields) -> Execution:
    """Insert a queued execution, log its `start` event, and enqueue it after commit."""
    execution = Execution.objects.create(
        tenant_id=workspace.tenant_id, workspace=workspace, principal=principal, source=source,
        inputs=inputs, agent_version=agent_version, skill_version=skill_version, parent=parent,
        state=ExecutionState.QUEUED, dispatched_at=timezone.now(), **fields,
    )
    append_event(execution, "start", {"status": execution.state, **(start_payload or {})})
    dispatch_on_commit(execution.id)
    return execution


# --- worker side: claim, lease, checkpoint, finish ------------------------------------------------


_CLAIM_SQL = """
UPDATE executions_execution
   SET state = 'running', attempt = attempt + 1, lease_owner = %(worker)s, lease_expires_at = %(expires)s,
       updated_at = %(now)s, started_at = COALESCE(started_at, %(now)s)
 WHERE id = %(id)s AND state = 'queued'
RETURNING *
"""


def claim_execution(execution_id, worker_id: str) -> Execution | None:
    """Take a queued execution for this worker, in one statement; None if another caller won it.

    The returned row's `attempt` is this run's fencing token.
    """
    now = timezone.now()
    params = {"id": execution_id, "worker": worker_id, "now": now,
              "expires": now + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)}
    return next(iter(Execution.objects.raw(_CLAIM_SQL, params)), None)


def _held(execution_id, attempt: int):
    return Execution.objects.filter(id=execution_id, attempt=attempt, state=ExecutionState.RUNNING)


def renew_lease(execution_id, attempt: int) -> bool:
    expires = timezone.now() + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
    return bool(_held(execution_id, attempt).update(lease_expires_at=expires))


def save_checkpoint(execution_id, attempt: int, checkpoint: dict, **usage) -> bool:
    return bool(_held(execution_id, attempt).update(checkpoint=checkpoint, updated_at=timezone.now(), **usage))


def _transition(execution, queryset, state: str, event_type: str, event_payload: dict, **fields) -> bool:
    """Move the row to `state` if `queryset` still matches it, and log the event, atomically."""
    now = timezone.now()
    if state in TERMINAL_STATES:
        fields.setdefault("finished_at", now)
        fields.setdefault("wallclock_ms", int((now - execution.created_at).total_seconds() * 1000))
    with transaction.atomic():
        if not queryset.update(state=state, lease_owner="", lease_expires_at=None, updated_at=now, **fields):
            return False
        if state in TERMINAL_STATES:  # exactly once: only one terminal transition can win
            settle_credits(execution.id, charge=fields.get("credits", ZERO))
        append_event(execution, event_type, {"status": state, **event_payload})
    return True


def _error(code: str, message: str) -> dict:
    return {"code": code, "message": message}


def complete_execution(execution, attempt: int, outputs: dict, final_payload: dict, **usage) -> bool:
    return _transition(execution, _held(execution.id, attempt), ExecutionState.COMPLETED, "final", final_payload,
                       outputs=outputs, **usage)


def fail_execution(execution, attempt: int, failure_reason: str, message: str, **usage) -> bool:
    error = _error(failure_reason, message)
    return _transition(execution, _held(execution.id, attempt), ExecutionState.FAILED, "error", error,
                       failure_reason=failure_reason, error=error, **usage)


CANCELLED_ERROR = _error("cancelled", "The execution was cancelled.")


def cancel_running_execution(execution, attempt: int, **usage) -> bool:
    """The worker saw cancel_requested between steps or chunks and stops here."""
    return _transition(execution, _held(execution.id, attempt), ExecutionState.CANCELLED, "error", CANCELLED_ERROR,
                       failure_reason="cancelled", error=CANCELLED_ERROR, **usage)


def suspend_execution(execution, attempt: int, state: str, checkpoint: dict, payload: dict) -> bool:
    """Save the checkpoint and free the worker (a `suspended` event); a resume call re-queues it."""
    assert state in SUSPENDED_STATES
    return _transition(execution, _held(execution.id, attempt), state, "suspended", payload, checkpoint=checkpoint)


# --- API side: cancel and resume ------------------------------------------------------------------


def request_cancel(execution: Execution) -> Execution:
    """Cancel at once what no worker runs; ask the running worker to stop cooperatively."""
    idle = Execution.objects.filter(id=execution.id, state__in=[ExecutionState.QUEUED, *SUSPENDED_STATES])
    if not _transition(execution, idle, ExecutionState.CANCELLED, "error", CANCELLED_ERROR,
                       cancel_requested=True, failure_reason="cancelled", error=CANCELLED_ERROR):
        Execution.objects.filter(id=execution.id, state=ExecutionState.RUNNING).update(
            cancel_requested=True, updated_at=timezone.now()
        )
    execution.refresh_from_db()
    return execution


@transaction.atomic
def resume_execution(execution: Execution, from_state: str, resume_input: dict) -> bool:
    """Store the input that a suspended execution waits for and re-queue it after commit."""
    resumed = Execution.objects.filter(id=execution.id, state=from_state).update(
        state=ExecutionState.QUEUED, resume_input=resume_input, dispatched_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if resumed:
        append_event(execution, "resumed", {"status": ExecutionState.QUEUED, "from_state": from_state})
        dispatch_on_commit(execution.id)
    return bool(resumed)


# --- reaper ---------------------------------------------------------------------------------------


def reap_expired_leases() -> dict:
    """Re-queue running executions whose worker stopped renewing its lease, or fail them."""
    now = timezone.now()
    requeued, failed = [], []
    expired = Execution.objects.filter(state=ExecutionState.RUNNING, lease_expires_at__lt=now)
    for execution in expired.only("id", "attempt", "recoveries", "created_at", "agent_version_id"):
        still_expired = _held(execution.id, execution.attempt).filter(lease_expires_at__lt=now)
        if execution.recoveries + 1 < settings.EXECUTION_MAX_ATTEMPTS:
            with transaction.atomic():
                if still_expired.update(state=ExecutionState.QUEUED, lease_owner="", lease_expires_at=None,
                                        recoveries=F("recoveries") + 1, dispatched_at=now, updated_at=now):
                    dispatch_on_commit(execution.id)
                    requeued.append(execution.id)
        else:
            error = _error("lease_expired", f"Its worker stopped renewing the lease {execution.recoveries + 1} times.")
            if _transition(execution, still_expired, ExecutionState.FAILED, "error", error,
                           failure_reason="lease_expired", error=error):
                failed.append(execution.id)
    if requeued or failed:
        logger.warning("reaper: re-queued %s, failed %s", requeued, failed)
    return {"requeued": requeued, "failed": failed}


def redispatch_stale_queued() -> list:
    """Publish again the task of queued rows whose message seems lost (crash before publish)."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.EXECUTION_REDISPATCH_AFTER_SECONDS)
    stale = Execution.objects.filter(state=ExecutionState.QUEUED).filter(
        Q(dispatched_at__lt=stale_before) | Q(dispatched_at__isnull=True)
    )
    redispatched = []
    for execution_id in stale.values_list("id", flat=True)[:500]:
        with transaction.atomic():
            if Execution.objects.filter(id=execution_id, state=ExecutionState.QUEUED).filter(
                Q(dispatched_at__lt=stale_before) | Q(dispatched_at__isnull=True)
            ).update(dispatched_at=now):
                dispatch_on_commit(execution_id)
                redispatched.append(execution_id)
    if redispatched:
        logger.warning("reaper: re-dispatched queued executions %s", redispatched)
    return redispatched
