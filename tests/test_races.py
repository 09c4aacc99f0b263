"""Races of the execution core, driven deterministically: two database connections (threads), one
holding the row lock the other's statement waits for, released when the test says so."""

import threading

import pytest
from django.db import connection, transaction

from config import celery_app
from executions import services
from executions.checkpoints import Checkpoint, NodeState
from executions.models import Execution, ExecutionSource, ExecutionState
from tests.helpers import wait_for
from workers import leases, runtime
from workers.leases import HeldLease, LeaseRenewer
from workers.outcomes import Suspend
from workers.run import ExecutionRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def undispatched(monkeypatch):
    """Rows committed here are not published: a live worker of the session would claim them first."""
    monkeypatch.setattr(celery_app, "send_task", lambda *args, **kwargs: None)


def claimed(new_tenant, agent) -> Execution:
    """A running execution, claimed by a worker of this test."""
    execution = services.create_execution(
        workspace=new_tenant.workspace,
        principal=new_tenant.end_user_key.api_key.principal,
        source=ExecutionSource.API,
        inputs={"message": "hi"},
        agent_version=agent.live_version,
    )
    return services.do_claim_execution(execution.id, "test-worker:1")


def in_thread(target) -> threading.Thread:
    """target() on a thread of its own, hence on a database connection of its own."""

    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def backends_waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_a_cancel_is_not_lost_when_the_worker_suspends_while_it_runs(tenant, agent):
    """The losing order of two UPDATEs ("cancel if idle", then "flag if running"): the first sees
    the row running and skips it, the worker's suspension commits, the second finds it no longer
    running. Here the worker's suspension holds the row lock (uncommitted) while the cancel starts,
    and commits once the cancel waits for that lock."""
    execution = claimed(tenant, agent)
    suspended, commit = threading.Event(), threading.Event()

    def worker_suspends():
        with transaction.atomic():
            assert services.do_suspend_execution(
                execution,
                execution.attempt,
                ExecutionState.AWAITING_APPROVAL,
                Checkpoint(node_state=NodeState(node_id="gate", waiting=True)),
                {"reason": "approval"},
            )
            suspended.set()
            commit.wait(10)

    worker = in_thread(worker_suspends)
    assert suspended.wait(10)
    cancel = in_thread(lambda: services.do_request_cancel(Execution.objects.get(id=execution.id)))
    wait_for(lambda: backends_waiting_for_a_lock() >= 1 or not cancel.is_alive(), timeout=10)
    commit.set()
    worker.join(10)
    cancel.join(10)

    cancelled = Execution.objects.get(id=execution.id)
    assert cancelled.state == ExecutionState.CANCELLED and cancelled.failure_reason == "cancelled"


def test_a_run_that_suspends_after_a_cancel_was_requested_is_cancelled_instead(tenant, workflow_agent):
    """The other order: the cancel committed while the run ran (it only sets the flag), and the run,
    already past its last check, suspends: it must not leave a suspended row that nobody cancels."""
    agent = workflow_agent({"id": "gate", "type": "human_gate"})
    execution = claimed(tenant, agent)
    services.do_request_cancel(Execution.objects.get(id=execution.id))
    assert Execution.objects.get(id=execution.id).state == ExecutionState.RUNNING  # only flagged

    run = ExecutionRun(execution, execution.attempt, HeldLease(execution, execution.attempt, hard_deadline=1e12))
    suspension = Suspend(ExecutionState.AWAITING_APPROVAL, {"reason": "approval"}, NodeState(node_id="gate"))
    assert run.suspend(suspension) == "cancelled"

    cancelled = Execution.objects.get(id=execution.id)
    assert cancelled.state == ExecutionState.CANCELLED and cancelled.lease_owner == ""
    assert not cancelled.events.filter(type="suspended").exists()


def test_a_run_whose_constructor_raises_gives_its_lease_back_and_the_execution_ends(tenant, agent, monkeypatch):
    """ExecutionRun(...) raising (here: a checkpoint of a newer version) happens inside the runtime's
    try: the lease is released from the process's renewer and the execution fails, never stays
    `running` with a lease renewed for the life of the worker."""
    renewer = LeaseRenewer()  # the process's renewer, not started: what it holds is what it would renew
    monkeypatch.setattr(leases, "_renewer", renewer)
    execution = services.create_execution(
        workspace=tenant.workspace,
        principal=tenant.end_user_key.api_key.principal,
        source=ExecutionSource.API,
        inputs={"message": "hi"},
        agent_version=agent.live_version,
    )
    Execution.objects.filter(id=execution.id).update(checkpoint={"version": 10_000})

    assert runtime.run_execution(execution.id) == "failed"

    assert renewer._held == set()
    failed = Execution.objects.get(id=execution.id)
    assert failed.state == ExecutionState.FAILED and failed.failure_reason == "internal_error"
    assert failed.lease_owner == "" and failed.lease_expires_at is None
