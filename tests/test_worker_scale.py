"""Many executions in flight in one worker process (Celery's threads pool), and crash recovery of all of them."""

import time

import pytest

from executions import services
from executions.events import LeaseLost, PendingEvent
from executions.models import Execution, ExecutionEvent, ExecutionSource, ExecutionState
from tests.helpers import wait_for
from workers.event_writer import RunEvents, write_batch
from workers.leases import HeldLease, LeaseRenewer

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = " ".join(f"w{i:02d}" for i in range(20))


def start_many(new_tenant, agent, count: int) -> list:
    """Queued executions, committed and dispatched, as the API creates them."""
    return [
        services.create_execution(
            workspace=new_tenant.workspace,
            principal=new_tenant.end_user_key.api_key.principal,
            source=ExecutionSource.API,
            inputs={"message": "hi"},
            agent_version=agent.live_version,
        ).id
        for _ in range(count)
    ]


def assert_ran_exactly_once(execution_id, attempts: int = 1) -> None:
    execution = Execution.objects.get(id=execution_id)
    assert execution.state == ExecutionState.COMPLETED and execution.attempt == attempts
    assert execution.outputs["text"] == REPLY
    events = list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap, no doubled seq
    kinds = [e.type for e in events]
    assert kinds.count("node_start") == 1 and kinds.count("final") == 1 and kinds[-1] == "final"
    assert "".join(e.data["text"] for e in events if e.type == "text") == REPLY  # nothing streamed twice


def max_overlap(executions) -> int:
    """The most executions that were running at one moment, from their start and end times."""
    edges = sorted(
        [(e.started_at, 1) for e in executions] + [(e.finished_at, -1) for e in executions],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_fifty_slow_executions_run_at_once_in_one_worker_process_and_a_cancel_stops_only_its_own(
    live, worker, tenant, make_agent
):
    # ~5 s of streaming each: longer than the tests' 4 s lease, so the renewer must keep all 50 alive
    agent = make_agent(tenant.workspace, chunk_delay_ms=250, reply=REPLY)
    ids = start_many(tenant, agent, 50)
    running = Execution.objects.filter(id__in=ids, state=ExecutionState.RUNNING)
    wait_for(lambda: running.count() >= 45, timeout=30)
    assert {owner.rsplit(":", 1)[1] for owner in running.values_list("lease_owner", flat=True)} == {str(worker.pid)}
    victim = ids[7]
    wait_for(lambda: ExecutionEvent.objects.filter(execution_id=victim, type="text").count() >= 3, timeout=30)
    services.do_request_cancel(Execution.objects.get(id=victim))

    wait_for(
        lambda: (
            not Execution.objects.filter(id__in=ids)
            .exclude(state__in=[ExecutionState.COMPLETED, ExecutionState.CANCELLED, ExecutionState.FAILED])
            .exists()
        ),
        timeout=90,
    )
    cancelled = Execution.objects.get(id=victim)
    assert cancelled.state == ExecutionState.CANCELLED and cancelled.failure_reason == "cancelled"
    assert ExecutionEvent.objects.filter(execution_id=victim, type="text").count() < 20
    others = [execution_id for execution_id in ids if execution_id != victim]
    for execution_id in others:
        assert_ran_exactly_once(execution_id)

    executions = list(Execution.objects.filter(id__in=ids))
    assert {e.lease_owner or "" for e in executions} == {""}  # every lease given back
    assert max_overlap(executions) >= 45  # in flight together, not one after another


def test_a_worker_killed_with_twenty_in_flight_has_all_of_them_recovered_once(live, worker, tenant, make_agent):
    agent = make_agent(tenant.workspace, chunk_delay_ms=150, reply=REPLY)
    ids = start_many(tenant, agent, 20)
    wait_for(lambda: all(ExecutionEvent.objects.filter(execution_id=i, type="text").exists() for i in ids), timeout=30)
    running = Execution.objects.filter(id__in=ids, state=ExecutionState.RUNNING)
    assert {owner.rsplit(":", 1)[1] for owner in running.values_list("lease_owner", flat=True)} == {str(worker.pid)}
    assert running.count() == 20

    worker.kill_and_restart()  # the housekeeping process's reaper re-queues them once their leases expire

    wait_for(lambda: Execution.objects.filter(id__in=ids, state=ExecutionState.COMPLETED).count() == 20, timeout=90)
    for execution_id in ids:
        assert_ran_exactly_once(execution_id, attempts=2)


# --- the process-wide threads of a worker, run in-process ------------------------------------------


def claimed(new_tenant, agent):
    execution_id = start_many(new_tenant, agent, 1)[0]
    return services.do_claim_execution(execution_id, "test-worker:1")


@pytest.mark.django_db
def test_one_statement_writes_the_events_of_many_runs_each_in_order_and_fenced(tenant, agent):
    first, second, stale = (claimed(tenant, agent) for _ in range(3))
    Execution.objects.filter(id=stale.id).update(attempt=stale.attempt + 1)  # its lease went to another attempt
    Execution.objects.filter(id=second.id).update(cancel_requested=True)
    runs = {e.id: RunEvents(e, e.attempt) for e in (first, second, stale)}
    batch = []
    for n in range(3):
        for execution in (first, second, stale):
            run = runs[execution.id]
            run._pending += 1
            batch.append((run, PendingEvent(execution.id, execution.attempt, "text", f'{{"text": "{n}"}}')))
    write_batch(batch)

    for execution in (first, second):
        events = list(ExecutionEvent.objects.filter(execution_id=execution.id).order_by("seq"))
        assert [(e.seq, e.type, e.data.get("text")) for e in events] == [
            (1, "start", None),
            (2, "text", "0"),
            (3, "text", "1"),
            (4, "text", "2"),
        ]
        assert runs[execution.id].last_seq == 4 and Execution.objects.get(id=execution.id).last_event_seq == 4
        runs[execution.id].flush()
    assert runs[second.id].cancel_requested and not runs[first.id].cancel_requested
    assert runs[stale.id].lease_lost
    assert ExecutionEvent.objects.filter(execution_id=stale.id).count() == 1  # only its start event
    with pytest.raises(LeaseLost):
        runs[stale.id].flush()


@pytest.mark.django_db
def test_leases_are_renewed_together_and_a_run_past_the_hard_limit_is_failed(tenant, agent):
    alive, lost, stuck = (claimed(tenant, agent) for _ in range(3))
    Execution.objects.filter(id=lost.id).update(attempt=lost.attempt + 1)
    Execution.objects.filter(id=alive.id).update(cancel_requested=True)
    renewer = LeaseRenewer()  # not started: renew() is what its thread runs every third of the lease
    leases = {e.id: HeldLease(e, e.attempt, hard_deadline=time.time() + 60) for e in (alive, lost)}
    leases[stuck.id] = HeldLease(stuck, stuck.attempt, hard_deadline=time.time() - 1)
    for lease in leases.values():
        renewer.hold(lease)
    before = Execution.objects.get(id=alive.id).lease_expires_at

    renewer.renew()

    assert Execution.objects.get(id=alive.id).lease_expires_at > before
    assert leases[alive.id].cancel_requested and not leases[alive.id].lost
    assert leases[lost.id].lost and leases[stuck.id].lost
    failed = Execution.objects.get(id=stuck.id)
    assert failed.state == ExecutionState.FAILED and failed.failure_reason == "time_limit_exceeded"
    assert (
        ExecutionEvent.objects.filter(execution_id=stuck.id).order_by("seq").last().data["code"]
        == "time_limit_exceeded"
    )
    assert renewer._held == {leases[alive.id]}


@pytest.mark.django_db
def test_a_run_past_the_soft_time_limit_fails_itself_at_its_next_chunk(tenant, make_agent, settings):
    from workers.runtime import run_execution

    settings.EXECUTION_HARD_TIME_LIMIT_SECONDS = 61  # the soft limit is 60 s less: 1 s
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=" ".join(f"w{i}" for i in range(40)))
    execution_id = start_many(tenant, agent, 1)[0]

    assert run_execution(execution_id) == "failed"  # in this process: events written inline, no renewer
    execution = Execution.objects.get(id=execution_id)
    assert execution.state == ExecutionState.FAILED and execution.failure_reason == "time_limit_exceeded"
    events = list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq"))
    assert events[-1].type == "error" and events[-1].data["code"] == "time_limit_exceeded"
    assert 5 <= sum(e.type == "text" for e in events) < 40  # stopped about 1 s into its 4 s; what streamed stays
