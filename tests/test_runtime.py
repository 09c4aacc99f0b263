"""The durable runtime: claims, leases, crash recovery, cancel, the reaper (crashes, cancels mid-run and
beat on the live worker and housekeeping; a redelivered task in-process)."""

import threading
from datetime import timedelta

import httpx
import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone

from executions import services
from executions.checkpoints import Checkpoint
from executions.models import Execution, ExecutionEvent, ExecutionState
from tests.factories import AgentFactory, ExecutionFactory
from tests.helpers import auth, execution_uuid, stream_agent, wait_for


def new_execution(new_tenant, agent=None, **fields):
    return ExecutionFactory(
        workspace=new_tenant.workspace,
        principal=new_tenant.end_user_key.api_key.principal,
        agent=agent,
        inputs={"message": "hi"},
        dispatched=True,
        **fields,
    )


def events_of(execution_id, type_=None):
    events = ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq")
    return list(events.filter(type=type_) if type_ else events)


@pytest.mark.django_db(transaction=True)
def test_two_claims_racing_for_one_execution_exactly_one_wins(tenant):
    execution = new_execution(tenant)
    barrier = threading.Barrier(8)
    results = []

    def claim(n):
        barrier.wait()
        try:
            claimed = services.do_claim_execution(execution.id, f"racer-{n}")
            results.append(claimed.attempt if claimed else None)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results, key=lambda r: r is None) == [1] + [None] * 7
    execution.refresh_from_db()
    assert execution.state == ExecutionState.RUNNING and execution.attempt == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_task_delivered_twice_runs_once(inline_runtime, tenant, agent):
    execution = new_execution(tenant, agent)
    for _ in range(3):  # e.g. a redelivery after the visibility timeout, plus a reaper re-dispatch
        current_app.send_task(services.RUN_EXECUTION_TASK, args=[str(execution.id)])
    assert inline_runtime.outcomes == ["completed", "not_claimed", "not_claimed"]
    execution.refresh_from_db()
    assert execution.attempt == 1
    assert len(events_of(execution.id, "node_start")) == 1
    assert len(events_of(execution.id, "final")) == 1


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_execution_is_recovered_and_completes_once(live, worker, tenant, make_agent):
    reply = " ".join(f"w{i:02d}" for i in range(40))
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=reply)
    events = stream_agent(live, agent, tenant, stop=lambda events: len(events) >= 8)
    execution_id = execution_uuid(events[0].data["execution_id"])
    owner = Execution.objects.get(id=execution_id).lease_owner
    pid = int(owner.rsplit(":", 1)[1])
    assert pid == worker.pid
    worker.kill_and_restart()  # the reaper (in the housekeeping process) re-queues it once its lease expires

    execution = wait_for(lambda: Execution.objects.filter(id=execution_id, state="completed").first(), timeout=60)
    assert execution.attempt == 2
    assert execution.outputs == {"text": reply, "parsed_output": None}
    assert len(events_of(execution_id, "final")) == 1
    assert len(events_of(execution_id, "node_start")) == 1
    # the client's concatenated text stays exact across the crash: nothing streamed twice
    texts = events_of(execution_id, "text")
    assert "".join(e.data["text"] for e in texts) == reply
    assert [e.seq for e in events_of(execution_id)] == list(range(1, execution.last_event_seq + 1))


@pytest.mark.django_db(transaction=True)
def test_worker_killed_after_a_tool_call_resumes_from_the_turn_checkpoint(live, worker, tenant):
    """The tool's logged result is reused (the tool is not called twice) and no event is written twice."""
    reply = " ".join(f"w{i:02d}" for i in range(40))
    agent = AgentFactory(
        workspace=tenant.workspace,
        name="tools",
        workflow={
            "nodes": [
                {
                    "id": "answer",
                    "type": "ai",
                    "tools": ["current_time"],
                    "model": {
                        "provider": "builtin",
                        "chunk_delay_ms": 100,
                        "script": [{"tool_calls": [{"name": "current_time", "arguments": {}}]}, {"text": reply}],
                    },
                }
            ]
        },
    )
    events = stream_agent(live, agent, tenant, stop=lambda evs: sum(e.data["type"] == "text" for e in evs) >= 4)
    execution_id = execution_uuid(events[0].data["execution_id"])
    assert int(Execution.objects.get(id=execution_id).lease_owner.rsplit(":", 1)[1]) == worker.pid
    worker.kill_and_restart()

    execution = wait_for(lambda: Execution.objects.filter(id=execution_id, state="completed").first(), timeout=60)
    assert execution.attempt == 2
    assert execution.outputs["text"] == reply
    assert [len(events_of(execution_id, kind)) for kind in ("node_start", "tool_call", "tool_result", "final")] == [
        1,
        1,
        1,
        1,
    ]
    assert "".join(e.data["text"] for e in events_of(execution_id, "text")) == reply


@pytest.mark.django_db(transaction=True)
def test_cancel_during_streaming_stops_within_one_chunk(live, tenant, make_agent):
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=" ".join(f"w{i}" for i in range(100)))
    cancel = {}

    def cancel_after_five_texts(events):
        if "response" not in cancel and sum(e.data["type"] == "text" for e in events) >= 5:
            cancel["response"] = httpx.post(
                f"{live}/executions/{events[0].data['execution_id']}/cancel", headers=auth(tenant), timeout=10
            )
            cancel["seq_at_cancel"] = Execution.objects.get(
                id=execution_uuid(events[0].data["execution_id"])
            ).last_event_seq
        return False

    events = stream_agent(live, agent, tenant, stop=cancel_after_five_texts)
    assert cancel["response"].status_code == 202
    assert cancel["response"].json()["data"]["cancel_requested"] is True
    assert events[-1].data["type"] == "error"
    assert events[-1].data["status"] == "cancelled" and events[-1].data["code"] == "cancelled"
    texts_after_cancel = [e for e in events if e.data["type"] == "text" and e.data["seq"] > cancel["seq_at_cancel"]]
    assert len(texts_after_cancel) <= 1
    execution = Execution.objects.get(id=execution_uuid(events[0].data["execution_id"]))
    assert execution.state == ExecutionState.CANCELLED
    assert execution.failure_reason == "cancelled"


@pytest.mark.django_db
def test_cancel_of_a_queued_execution_is_immediate_and_the_worker_does_not_run_it(tenant, agent):
    execution = new_execution(tenant, agent)
    services.do_request_cancel(execution)
    assert execution.state == ExecutionState.CANCELLED
    assert services.do_claim_execution(execution.id, "late-worker") is None
    assert [e.type for e in events_of(execution.id)] == ["error"]


@pytest.mark.django_db
def test_cancel_of_a_finished_execution_is_a_409(client, tenant, agent):
    execution = new_execution(tenant, agent, state=ExecutionState.COMPLETED)
    response = client.post(f"/executions/{execution.id}/cancel", headers=auth(tenant))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "execution_finished"


@pytest.mark.django_db
def test_reaper_requeues_an_expired_lease_then_fails_after_max_attempts(tenant, agent, settings):
    past = timezone.now() - timedelta(seconds=1)
    execution = new_execution(
        tenant, agent, state=ExecutionState.RUNNING, attempt=1, lease_expires_at=past, lease_owner="dead:1"
    )
    assert services.reap_expired_leases()["requeued"] == [execution.id]
    execution.refresh_from_db()
    assert execution.state == ExecutionState.QUEUED and execution.lease_owner == ""

    execution.refresh_from_db()
    assert execution.recoveries == 1
    # a resumed suspension also raises the attempt number: only lost leases count towards the limit
    Execution.objects.filter(id=execution.id).update(
        state=ExecutionState.RUNNING, attempt=10, recoveries=settings.EXECUTION_MAX_ATTEMPTS - 2, lease_expires_at=past
    )
    assert services.reap_expired_leases()["requeued"] == [execution.id]
    Execution.objects.filter(id=execution.id).update(state=ExecutionState.RUNNING, lease_expires_at=past)
    assert services.reap_expired_leases()["failed"] == [execution.id]
    execution.refresh_from_db()
    assert execution.state == ExecutionState.FAILED and execution.failure_reason == "lease_expired"
    assert events_of(execution.id)[-1].data["code"] == "lease_expired"


@pytest.mark.django_db
def test_reaper_leaves_live_leases_alone(tenant, agent):
    future = timezone.now() + timedelta(seconds=30)
    execution = new_execution(tenant, agent, state=ExecutionState.RUNNING, attempt=1, lease_expires_at=future)
    assert services.reap_expired_leases() == {"requeued": [], "failed": []}
    execution.refresh_from_db()
    assert execution.state == ExecutionState.RUNNING


@pytest.mark.django_db
def test_reaper_redispatches_queued_rows_whose_message_was_lost(tenant, agent):
    stale = new_execution(tenant, agent)
    Execution.objects.filter(id=stale.id).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    fresh = new_execution(tenant, agent)
    assert services.redispatch_stale_queued() == [stale.id]
    stale.refresh_from_db()
    assert timezone.now() - stale.dispatched_at < timedelta(seconds=5)
    assert fresh.id not in services.redispatch_stale_queued()


@pytest.mark.django_db(transaction=True)
def test_lost_message_is_recovered_by_the_reaper_on_beat(live, tenant, agent):
    """A crash between commit and publish: the row is the outbox, beat's reaper re-dispatches it."""
    execution = new_execution(tenant, agent)
    Execution.objects.filter(id=execution.id).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    done = wait_for(lambda: Execution.objects.filter(id=execution.id, state="completed").first(), timeout=30)
    assert done.attempt == 1


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_cannot_write(tenant, agent):
    from executions.events import LeaseLost, append_event

    execution = new_execution(tenant, agent)
    attempt = services.do_claim_execution(execution.id, "w1").attempt
    Execution.objects.filter(id=execution.id).update(attempt=attempt + 1)  # someone else's attempt now
    with pytest.raises(LeaseLost):
        append_event(execution, "text", {"text": "stale"}, attempt=attempt)
    assert services.renew_leases([(execution.id, attempt)]) == {}
    assert not services.do_complete_execution(execution, attempt, outputs={}, final_payload={}, checkpoint=Checkpoint())


@pytest.mark.django_db
def test_execution_ids_are_time_ordered_so_new_rows_append_to_the_indexes(tenant, agent):
    import time

    first = new_execution(tenant, agent)
    time.sleep(0.002)
    second = new_execution(tenant, agent)
    assert first.id.version == 7 and second.id.version == 7 and first.id.variant == "specified in RFC 4122"
    assert first.id < second.id
    assert abs((first.id.int >> 80) / 1000 - first.created_at.timestamp()) < 1  # the first 48 bits: Unix ms
