"""Writes of the execution core: creation, dispatch, and every state transition.

Each transition is one conditional UPDATE (`WHERE state IN (...)`, and for a worker also
`AND attempt = <its attempt>`), so two workers or two API calls can never both win it: the row's
lock, taken by that UPDATE, is held until the transaction ends. `do_*` functions act; `check_*`
ones validate (locking what they check) and then act.
"""

import logging
from datetime import timedelta
from decimal import Decimal

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.broker import waiting_messages
from core.errors import ApiError
from core.metrics import EXECUTIONS_CREATED, EXECUTIONS_FINISHED, inc_on_commit
from executions import concurrency, fairness
from executions.checkpoints import Checkpoint
from executions.events import append_event
from executions.models import (
    SUSPENDED_STATES,
    TERMINAL_STATES,
    Execution,
    ExecutionCheckpoint,
    ExecutionSource,
    ExecutionState,
)
from executions.suspension import SuspensionOutcome, do_suspension_effects
from executions.terminal import TerminalOutcome, do_terminal_effects

logger = logging.getLogger(__name__)

RUN_EXECUTION_TASK = "workers.tasks.run_execution"


# --- creation and dispatch --------------------------------------------------------------------


def publish_task(execution_id, *, queue: str, priority: int) -> None:
    """Publish an execution's task message now, to `queue` at `priority` (executions/fairness.py).
    One that fails (the broker is down) fails nothing: the row is marked in PostgreSQL
    (`dispatched_at` NULL), which the reaper's next sweep re-publishes first thing once the broker
    answers again (redispatch_stale_queued), instead of waiting EXECUTION_REDISPATCH_AFTER_SECONDS
    for a message that was never sent."""
    try:
        current_app.send_task(RUN_EXECUTION_TASK, args=[str(execution_id)], queue=queue, priority=priority)
    except Exception:  # kombu's OperationalError, a Redis error: any message not sent
        logger.warning("execution %s: task not published, left for the reaper", execution_id, exc_info=True)
        Execution.objects.filter(id=execution_id, state=ExecutionState.QUEUED).update(dispatched_at=None)


def dispatch_start_on_commit(execution_id, workspace_id) -> None:
    """A new execution's first message, once the row is committed (the row itself is the outbox: a
    publish that fails leaves it to the reaper, publish_task), at its workspace's fair priority."""

    def publish():
        publish_task(
            execution_id, queue=settings.CELERY_TASK_DEFAULT_QUEUE, priority=fairness.start_priority(workspace_id)
        )

    transaction.on_commit(publish)


def dispatch_resume_on_commit(execution_id, *, queue: str | None = None) -> None:
    """The message of a run already started (a resume, a re-queue, a hand-back) once the row is
    committed: on the resumes queue (or `queue`: the media polls'), ahead of every start."""
    target = queue or settings.RESUMES_QUEUE
    transaction.on_commit(lambda: publish_task(execution_id, queue=target, priority=fairness.RESUME))


def wake_deferred_on_commit(execution) -> None:
    """A slot of the execution's workspace frees when this transaction commits: dispatch the oldest
    execution its running cap holds back (executions/concurrency.py). Nothing for a run claimed
    without a cap."""
    if getattr(execution, "capped", True) is False:
        return
    workspace_id = execution.workspace_id

    def wake():
        for execution_id in concurrency.wake_deferred(workspace_id):
            publish_task(execution_id, queue=settings.CELERY_TASK_DEFAULT_QUEUE, priority=fairness.START)

    transaction.on_commit(wake)


@transaction.atomic(savepoint=False)  # inside a start's transaction: no savepoint round trips; errors abort it all
def create_execution(
    *,
    workspace,
    principal,
    source,
    inputs,
    agent_version=None,
    skill_version=None,
    parent=None,
    start_payload=None,
    start_event: str = "start",
    **fields,
) -> Execution:
    """Insert a queued execution, log its `start` event (a fork's: `forked_from`), and enqueue it
    after commit."""
    execution = Execution.objects.create(
        tenant_id=workspace.tenant_id,
        workspace=workspace,
        principal=principal,
        source=source,
        inputs=inputs,
        agent_version=agent_version,
        skill_version=skill_version,
        parent=parent,
        state=ExecutionState.QUEUED,
        dispatched_at=timezone.now(),
        **fields,
    )
    append_event(execution, start_event, {"status": execution.state, **(start_payload or {})})
    dispatch_start_on_commit(execution.id, workspace.id)
    inc_on_commit(EXECUTIONS_CREATED, execution.responder_type, execution.source)
    return execution


def create_batch(*, workspace, principal, agent_version, idempotency_key: str) -> Execution:
    """The parent row of a batch: it waits for its items, run by no worker itself."""
    batch = Execution.objects.create(
        tenant_id=workspace.tenant_id,
        workspace=workspace,
        principal=principal,
        source=ExecutionSource.BATCH,
        agent_version=agent_version,
        state=ExecutionState.WAITING_FOR_SUB_EXECUTION,
        inputs={},
        idempotency_key=idempotency_key,
        started_at=timezone.now(),
    )
    inc_on_commit(EXECUTIONS_CREATED, batch.responder_type, batch.source)
    return batch


def start_batch(batch: Execution, agent, items: list[Execution]) -> None:
    append_event(
        batch,
        "batch_started",
        {
            "status": batch.state,
            "agent_id": f"agent:{agent.id}",
            "total": len(items),
            "items": [{"key": item.batch_key, "item_execution_id": item.public_id} for item in items],
        },
    )


# --- worker side: claim, lease, checkpoint, finish ------------------------------------------------


def do_claim_execution(execution_id, worker_id: str) -> Execution | None:
    """Take a queued execution for this worker; None if another caller won it, or if its workspace
    runs its maximum of executions (it stays queued, deferred, until a slot frees:
    executions/concurrency.py). Without a cap, one statement (the row is locked only for it).

    The returned row's `attempt` is this run's fencing token.
    """
    now = timezone.now()
    params = {
        "id": execution_id,
        "worker": worker_id,
        "now": now,
        "expires": now + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS),
    }
    return concurrency.claim_uncapped(params) or concurrency.claim_capped(params)


def _held(execution_id, attempt: int):
    return Execution.objects.filter(id=execution_id, attempt=attempt, state=ExecutionState.RUNNING)


_RENEW_SQL = """
UPDATE executions_execution e
   SET lease_expires_at = %(expires)s
  FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
 WHERE e.id = held.id AND e.attempt = held.attempt AND e.state = 'running'
RETURNING e.id, e.cancel_requested
"""


def renew_leases(held: list[tuple]) -> dict:
    """Renew the leases of a worker's (execution_id, attempt) runs in one statement.

    Returns {execution_id: cancel_requested} for the leases still held; the others were lost."""
    if not held:
        return {}
    expires = timezone.now() + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_RENEW_SQL, {"expires": expires, "ids": [i for i, _ in held], "attempts": [a for _, a in held]})
        return {execution_id: bool(cancel) for execution_id, cancel in cursor.fetchall()}


_SAVE_CHECKPOINT_SQL = """
WITH saved AS (
    UPDATE executions_execution
       SET checkpoint = %(checkpoint)s, updated_at = %(now)s{columns}
     WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running'
 RETURNING id
)
INSERT INTO executions_executioncheckpoint (execution_id, seq, data, created_at)
SELECT id, %(seq)s, %(checkpoint)s, %(now)s FROM saved
RETURNING id
"""


def save_checkpoint(execution_id, attempt: int, checkpoint: Checkpoint, **usage) -> bool:
    """Fenced by the attempt: False if the lease was lost. The row's checkpoint and its entry in the
    history (ExecutionCheckpoint, what forks start from) in one statement: one round trip, atomic."""
    params = {"id": execution_id, "attempt": attempt, "now": timezone.now(), "seq": checkpoint.event_seq}
    params["checkpoint"] = _db_value("checkpoint", checkpoint.to_json())
    columns = ""
    for name, value in usage.items():
        column = Execution._meta.get_field(name).column
        columns += f", {column} = %({name})s"
        params[name] = _db_value(name, value)
    with connection.cursor() as cursor:
        cursor.execute(_SAVE_CHECKPOINT_SQL.format(columns=columns), params)
        return cursor.fetchone() is not None


def _db_value(name: str, value):
    """A value as the ORM would write it to the execution's column `name` (JSON adapted, decimals...)."""
    return Execution._meta.get_field(name).get_db_prep_save(value, connection)


def _transition(
    execution, queryset, state: str, event_type: str | None, event_payload: dict, frees_slot: bool = True, **fields
) -> bool:
    """Move the row to `state` if `queryset` still matches it, and log the event, atomically.

    The UPDATE locks the row until the transaction ends. A terminal transition also runs the
    terminal effects (executions/terminal.py: credits, conversation, parent) in that transaction:
    only one terminal transition can win, so each happens exactly once. `frees_slot`: the row was
    running or queued, so its workspace's oldest deferred execution may run now (concurrency.py)."""
    now = timezone.now()
    terminal = state in TERMINAL_STATES
    if terminal:
        fields.setdefault("finished_at", now)
        fields.setdefault("wallclock_ms", int((now - execution.created_at).total_seconds() * 1000))
    with transaction.atomic():
        if not queryset.update(state=state, lease_owner="", lease_expires_at=None, updated_at=now, **fields):
            return False
        if "checkpoint" in fields:  # its entry in the history forks start from (ExecutionCheckpoint)
            checkpoint = fields["checkpoint"]
            ExecutionCheckpoint.objects.create(
                execution_id=execution.id, seq=checkpoint.get("event_seq", 0), data=checkpoint
            )
        if event_type:
            append_event(execution, event_type, {"status": state, **event_payload})
        if terminal:
            do_terminal_effects(_outcome(execution, state, fields))
            inc_on_commit(EXECUTIONS_FINISHED, execution.responder_type, execution.source, state)
        if frees_slot:
            wake_deferred_on_commit(execution)
    return True


def _outcome(execution: Execution, state: str, fields: dict) -> TerminalOutcome:
    return TerminalOutcome(
        execution_id=execution.id,
        public_id=execution.public_id,
        workspace_id=execution.workspace_id,
        state=state,
        inputs=execution.inputs or {},
        outputs=fields.get("outputs"),
        error=fields.get("error"),
        charge=fields.get("credits", Decimal(0)),
        credit_account_id=execution.credit_account_id,
        credits_held=execution.credits_held,
        parent_id=execution.parent_id,
        batch_key=execution.batch_key,
    )


def _error(code: str, message: str) -> dict:
    return {"code": code, "message": message}


def do_complete_execution(
    execution, attempt: int, outputs: dict, final_payload: dict, checkpoint: Checkpoint, **usage
) -> bool:
    """Fenced by the attempt; the row is locked by the transition (terminal effects included)."""
    return _transition(
        execution,
        _held(execution.id, attempt),
        ExecutionState.COMPLETED,
        "final",
        final_payload,
        outputs=outputs,
        checkpoint=checkpoint.to_json(),
        **usage,
    )


def do_fail_execution(execution, attempt: int, failure_reason: str, message: str, **usage) -> bool:
    """Fenced by the attempt; the row is locked by the transition (terminal effects included)."""
    error = _error(failure_reason, message)
    return _transition(
        execution,
        _held(execution.id, attempt),
        ExecutionState.FAILED,
        "error",
        error,
        failure_reason=failure_reason,
        error=error,
        **usage,
    )


CANCELLED_ERROR = _error("cancelled", "The execution was cancelled.")


def do_cancel_running_execution(execution, attempt: int, **usage) -> bool:
    """The worker saw cancel_requested between steps or chunks and stops here (fenced by the attempt)."""
    by = Execution.objects.filter(id=execution.id).values_list("cancel_requested_by", flat=True).first()
    return _transition(
        execution,
        _held(execution.id, attempt),
        ExecutionState.CANCELLED,
        "error",
        {**CANCELLED_ERROR, "by": by} if by else CANCELLED_ERROR,
        failure_reason="cancelled",
        error=CANCELLED_ERROR,
        **usage,
    )


def do_suspend_execution(
    execution,
    attempt: int,
    state: str,
    checkpoint: Checkpoint,
    payload: dict | None,
    timeout_seconds: float | None = None,
    sub_execution: dict | None = None,
) -> bool:
    """Save the checkpoint and free the worker (a `suspended` event unless the wait is internal).
    False if the lease was lost or a cancel was requested (the caller then cancels the run).

    Fenced by the attempt, and skips a row whose cancel was requested (race: a cancel that set the
    flag while this run was running must not land on a suspended row that no worker reads); the
    row stays locked by its UPDATE until the child is created.
    `timeout_seconds`: the reaper resumes it with the node state's `input_on_timeout()` after that long.
    `sub_execution`: the child it waits for, created in the same transaction (so the child cannot
    finish before its parent waits for it)."""
    assert state in SUSPENDED_STATES
    deadline = timezone.now() + timedelta(seconds=timeout_seconds) if timeout_seconds else None
    with transaction.atomic():
        if not _transition(
            execution,
            _held(execution.id, attempt).filter(cancel_requested=False),
            state,
            "suspended" if payload is not None else None,
            payload or {},
            checkpoint=checkpoint.to_json(),
            resume_deadline=deadline,
        ):
            return False
        if payload is not None:  # a wait for the outside (executions/suspension.py)
            do_suspension_effects(
                SuspensionOutcome(
                    execution_id=execution.id,
                    public_id=execution.public_id,
                    workspace_id=execution.workspace_id,
                    state=state,
                    payload=payload,
                )
            )
        if sub_execution:
            child = {"source": ExecutionSource.SUB, **sub_execution}
            create_execution(
                workspace=execution.workspace,
                principal=execution.principal,
                parent=execution,
                start_payload={"parent_execution_id": execution.public_id},
                **child,
            )
    return True


def do_hand_back_execution(execution, attempt: int) -> bool:
    """Its worker shuts down (workers/shutdown.py): the run goes back to `queued`, from its last
    checkpoint (kept as it is), its lease cleared, with a `resumed` event (`from_state: running`),
    and its task is published after commit, so another worker claims it at once instead of after
    the lease. Not a lost lease: `recoveries` (EXECUTION_MAX_ATTEMPTS) is not counted, the worker
    did nothing wrong. False if the lease was lost or a cancel was requested (the caller then
    cancels the run).

    Fenced by the attempt, as every worker transition: a hand-back racing the reaper (an expired
    lease) or a cancel, one of them wins the row's lock and the other finds it changed. Skips a row
    whose cancel was requested (race: the flag set while this run ran must not land on a queued
    row, to be seen only by the next claim), as do_suspend_execution does."""
    held = _held(execution.id, attempt).filter(cancel_requested=False)
    running = {"from_state": ExecutionState.RUNNING}
    if not _transition(execution, held, ExecutionState.QUEUED, "resumed", running, dispatched_at=timezone.now()):
        return False
    dispatch_resume_on_commit(execution.id)
    return True


# --- API side: cancel and resume ------------------------------------------------------------------


def check_request_cancel(execution: Execution) -> Execution:
    """The cancel endpoints: an execution that completed or failed cannot be cancelled (409); no
    lock for the check (a run that ends meanwhile makes do_request_cancel a no-op)."""
    if execution.state in (ExecutionState.COMPLETED, ExecutionState.FAILED):
        raise ApiError(409, "execution_finished", f"The execution already ended in state {execution.state}.")
    return do_request_cancel(execution)


def do_request_cancel(execution: Execution, *, by: str | None = None) -> Execution:
    """Cancel at once what no worker runs; ask the running worker to stop cooperatively.

    Race: a worker that suspends its run between "the run is not idle" and "set the flag on the
    running row" would leave a suspended row nobody cancels, while the client was told 202. So the
    flag is set first, on any unfinished row, and that UPDATE's row lock is held (one transaction)
    while the idle transition is taken: the state cannot change between the two. A worker that
    suspends after this commits finds the flag and cancels instead (do_suspend_execution skips a
    flagged row). Its unfinished sub-executions (and batch items) are cancelled with it.

    `by`: who asked, when not the API's caller (an operator, `admin:<username>`), in the `error` event
    of a cancel taken at once, and kept on the row for the worker's `error` event otherwise."""
    with transaction.atomic():
        unfinished = Execution.objects.filter(id=execution.id).exclude(state__in=TERMINAL_STATES)
        if unfinished.update(cancel_requested=True, cancel_requested_by=by or "", updated_at=timezone.now()):
            idle = Execution.objects.filter(id=execution.id, state__in=[ExecutionState.QUEUED, *SUSPENDED_STATES])
            _transition(
                execution,
                idle,
                ExecutionState.CANCELLED,
                "error",
                {**CANCELLED_ERROR, "by": by} if by else CANCELLED_ERROR,
                failure_reason="cancelled",
                error=CANCELLED_ERROR,
                resume_deadline=None,
            )
    for child in Execution.objects.filter(parent_id=execution.id).exclude(state__in=TERMINAL_STATES):
        do_request_cancel(child, by=by)
    execution.refresh_from_db()
    return execution


@transaction.atomic
def do_resume_execution(
    execution: Execution, from_state: str, resume_input: dict, *, by: str | None = None, queue: str | None = None
) -> int:
    """Store the input that a suspended execution waits for and re-queue it after commit; its
    conditional UPDATE locks the row until the (caller's) transaction ends. `by`: an operator who
    resumed it (`admin:<username>`), named in the `resumed` event; `queue`: the media polls' for a
    media wait (dispatch_resume_on_commit).

    Returns the seq of its `resumed` event (a stream of the resumed run starts there), 0 if the
    execution was not in `from_state`."""
    resumed = Execution.objects.filter(id=execution.id, state=from_state).update(
        state=ExecutionState.QUEUED,
        resume_input=resume_input,
        resume_deadline=None,
        dispatched_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if not resumed:
        return 0
    payload = {"status": ExecutionState.QUEUED, "from_state": from_state, **({"by": by} if by else {})}
    event = append_event(execution, "resumed", payload).event
    dispatch_resume_on_commit(execution.id, queue=queue)
    return event["seq"]


def do_complete_batch(batch: Execution, summary: dict) -> bool:
    """The last item of a batch finished: the batch completes with a `batch_completed` event
    (called with the batch's row locked, executions/sub_executions.py)."""
    waiting = Execution.objects.filter(id=batch.id, state=ExecutionState.WAITING_FOR_SUB_EXECUTION)
    return _transition(
        batch, waiting, ExecutionState.COMPLETED, "batch_completed", summary, frees_slot=False, outputs=summary
    )


# --- reaper ---------------------------------------------------------------------------------------


def reap_expired_leases() -> dict:
    """Re-queue running executions whose worker stopped renewing its lease, or fail them."""
    now = timezone.now()
    requeued, failed = [], []
    expired = Execution.objects.filter(state=ExecutionState.RUNNING, lease_expires_at__lt=now)
    for execution in expired.only(
        "id",
        "workspace_id",
        "attempt",
        "recoveries",
        "created_at",
        "parent_id",
        "batch_key",
        "credit_account_id",
        "credits_held",
        "source",  # with the versions: the metrics' labels
        "agent_version_id",
        "skill_version_id",
    ):
        still_expired = _held(execution.id, execution.attempt).filter(lease_expires_at__lt=now)
        if execution.recoveries + 1 < settings.EXECUTION_MAX_ATTEMPTS:
            with transaction.atomic():
                if still_expired.update(
                    state=ExecutionState.QUEUED,
                    lease_owner="",
                    lease_expires_at=None,
                    recoveries=F("recoveries") + 1,
                    dispatched_at=now,
                    updated_at=now,
                ):
                    dispatch_resume_on_commit(execution.id)
                    wake_deferred_on_commit(execution)
                    requeued.append(execution.id)
        else:
            error = _error("lease_expired", f"Its worker stopped renewing the lease {execution.recoveries + 1} times.")
            if _transition(
                execution,
                still_expired,
                ExecutionState.FAILED,
                "error",
                error,
                failure_reason="lease_expired",
                error=error,
            ):
                failed.append(execution.id)
    if requeued or failed:
        logger.warning("reaper: re-queued %s, failed %s", requeued, failed)
    return {"requeued": requeued, "failed": failed}


def redispatch_stale_queued() -> list:
    """Publish again the task of queued rows whose message was not sent (the broker was down), or
    seems lost: published EXECUTION_REDISPATCH_AFTER_SECONDS ago and never claimed, while the
    execution queues are empty (with a backlog waiting, it is most likely still in it: core/broker.py).
    At the lowest priority: usually a duplicate, which the claim makes a no-op."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.EXECUTION_REDISPATCH_AFTER_SECONDS)
    lost = Q(dispatched_at__isnull=True)
    if waiting_messages(*settings.EXECUTION_QUEUES) == 0:
        lost |= Q(dispatched_at__lt=stale_before)
    # not the ones a running cap holds back on purpose: a freed slot or release_deferred dispatches those
    stale = Execution.objects.filter(state=ExecutionState.QUEUED, deferred_at__isnull=True).filter(lost)
    redispatched = []
    for execution_id in stale.order_by().values_list("id", flat=True)[:500]:  # no sort by Meta.ordering
        with transaction.atomic():
            if (
                Execution.objects.filter(id=execution_id, state=ExecutionState.QUEUED, deferred_at__isnull=True)
                .filter(lost)
                .update(dispatched_at=now)
            ):
                transaction.on_commit(
                    lambda execution_id=execution_id: publish_task(
                        execution_id, queue=settings.CELERY_TASK_DEFAULT_QUEUE, priority=fairness.REDISPATCH
                    )
                )
                redispatched.append(execution_id)
    if redispatched:
        logger.warning("reaper: re-dispatched queued executions %s", redispatched)
    return redispatched


def resume_timed_out() -> list:
    """Resume suspended nodes whose timeout passed with their default input (a gate's default
    decision, an event wait's `timed_out`)."""
    resumed = []
    due = Execution.objects.filter(state__in=SUSPENDED_STATES, resume_deadline__lt=timezone.now())
    for execution in due.only("id", "state", "checkpoint")[:500]:
        checkpoint = Checkpoint.from_json(execution.checkpoint)
        timeout_input = checkpoint.input_on_timeout()
        queue = settings.MEDIA_QUEUE if checkpoint.media_request_id() else None  # a media node's poll
        if timeout_input is not None and do_resume_execution(execution, execution.state, timeout_input, queue=queue):
            resumed.append(execution.id)
    return resumed


def release_deferred() -> list:
    """Dispatch the deferred executions of workspaces with a free slot (executions/concurrency.py):
    a wake-up lost in a crash, a cap raised or removed in the admin."""
    released = concurrency.release_deferred()
    for execution_id in released:
        publish_task(execution_id, queue=settings.CELERY_TASK_DEFAULT_QUEUE, priority=fairness.START)
    if released:
        logger.info("reaper: released deferred executions %s", released)
    return released
