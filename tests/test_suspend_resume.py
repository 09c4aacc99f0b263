"""Suspension frees the worker with the state saved; resume stores the input and re-queues (in-process runtime)."""

import pytest

from executions import services
from executions.models import Execution, ExecutionEvent, ExecutionState
from tests.factories import AgentFactory
from tests.helpers import auth, execute, execution_uuid, stream, stream_agent

pytestmark = pytest.mark.django_db(transaction=True)

WORKFLOW = {
    "nodes": [
        {"id": "draft", "type": "ai", "model": {"provider": "builtin", "reply": "first part"}},
        {"id": "approval", "type": "wait_event", "event": "approved"},
        {"id": "final_answer", "type": "ai", "model": {"provider": "builtin", "reply": "second part"}},
    ]
}


@pytest.fixture
def gated_agent(tenant):
    return AgentFactory(workspace=tenant.workspace, name="gated", workflow=WORKFLOW)


def test_suspend_then_resume_continues_from_the_checkpoint(api, tenant, gated_agent):
    first = stream_agent(api, gated_agent, tenant)
    assert first[-1].data["type"] == "suspended"
    assert first[-1].data["status"] == "waiting_for_external_event"
    execution = Execution.objects.get(id=execution_uuid(first[0].data["execution_id"]))
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT
    assert execution.lease_owner == "" and execution.lease_expires_at is None  # the worker is free
    assert execution.checkpoint["next_node"] == 1
    assert execution.checkpoint["node_outputs"] == {"draft": {"text": "first part", "parsed_output": None}}

    # a second resume of the same suspension loses: only one re-queue
    assert services.do_resume_execution(execution, ExecutionState.WAITING_FOR_EXTERNAL_EVENT, {"approved": True})
    assert not services.do_resume_execution(execution, ExecutionState.WAITING_FOR_EXTERNAL_EVENT, {"approved": False})

    rest = stream(api, "GET", f"/executions/{execution.id}/events", {**auth(tenant), "Last-Event-ID": first[-1].id})
    assert [e.data["type"] for e in rest][0] == "resumed"
    assert rest[-1].data["type"] == "final"
    assert rest[-1].data["output"]["text"] == "second part"
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED
    assert execution.checkpoint["node_outputs"] == {
        "draft": {"text": "first part", "parsed_output": None},
        "approval": {"approved": True},
        "final_answer": {"text": "second part", "parsed_output": None},
    }
    assert execution.resume_input is None
    # the first node ran once: one node_start each, text of `draft` streamed once
    starts = list(
        ExecutionEvent.objects.filter(execution=execution, type="node_start").values_list("data__node_id", flat=True)
    )
    assert starts == ["draft", "approval", "final_answer"]
    # a reader from the start goes through the old suspension to the end
    everything = stream(api, "GET", f"/executions/{execution.id}/events", auth(tenant))
    assert [e.data for e in everything] == [e.data for e in first + rest]


def test_sync_execute_returns_when_suspended(api, tenant, gated_agent):
    response = execute(api, gated_agent, tenant, "go")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "waiting_for_external_event"
    execution = Execution.objects.get(id=execution_uuid(data["execution_id"]))
    services.do_request_cancel(execution)
    assert Execution.objects.get(id=execution.id).state == ExecutionState.CANCELLED
