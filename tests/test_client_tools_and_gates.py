"""Suspensions resumed over the API: client tool results, human gate decisions, external events (in-process runtime)."""

import pytest

from executions.models import Execution, ExecutionState
from tests.helpers import auth, execute, execution_uuid, stream, stream_agent, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_TOOLS = [
    {
        "name": "query_transactions",
        "description": "Query the local ledger",
        "parameters": {"type": "object", "properties": {"start_date": {"type": "string"}}},
    },
    {"name": "get_location", "description": "Where the device is", "parameters": {"type": "object"}},
]


@pytest.fixture
def client_tool_agent(workflow_agent):
    return workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "accepts_client_tools": True,
            "model": {
                "provider": "builtin",
                "script": [
                    {
                        "text": "Let me look.",
                        "tool_calls": [
                            {"name": "query_transactions", "arguments": {"start_date": "2026-11-01"}},
                            {"name": "get_location", "arguments": {}},
                        ],
                    },
                    {"text": "You spent 5.50 near home."},
                ],
            },
        }
    )


def types(events):
    return [e.data["type"] for e in events]


def start_with_client_tools(api, agent, tenant):
    return stream(
        api,
        "POST",
        f"/agents/{agent.id}/execute/stream",
        auth(tenant),
        {"message": "what did I spend?", "client_tools": CLIENT_TOOLS},
    )


def post_result(api, tenant, execution_id, call_id, result=None, outcome="success", headers=None, **kwargs):
    return api.post(
        f"/executions/{execution_id}/tool-result",
        headers={**auth(tenant), **(headers or {})},
        json={"tool_call_id": call_id, "outcome": outcome, "result": result or {}, **kwargs},
    )


def test_client_tool_round_trip_with_the_sse_resume(api, tenant, client_tool_agent):
    first = start_with_client_tools(api, client_tool_agent, tenant)
    assert types(first) == [
        "start",
        "node_start",
        "text",
        "tool_call_awaiting_client",
        "tool_call_awaiting_client",
        "suspended",
    ]
    assert first[-1].data["status"] == "awaiting_client_tool"
    calls = [e.data for e in first if e.data["type"] == "tool_call_awaiting_client"]
    assert [c["name"] for c in calls] == ["query_transactions", "get_location"]
    assert calls[0]["arguments"] == {"start_date": "2026-11-01"}
    execution_id = first[0].data["execution_id"]
    execution = Execution.objects.get(id=execution_uuid(execution_id))
    assert execution.state == ExecutionState.AWAITING_CLIENT_TOOL and execution.lease_owner == ""

    # the first result is stored; the execution keeps waiting for the second
    response = post_result(api, tenant, execution_id, calls[0]["tool_call_id"], {"transactions": [], "total": 5.50})
    assert response.status_code == 200
    assert response.json()["data"] == {
        "execution_id": execution_id,
        "status": "awaiting_client_tool",
        "pending_tool_call_ids": [calls[1]["tool_call_id"]],
    }
    # the last one resumes it, and with Accept: text/event-stream the answer is the resumed run
    rest = stream(
        api,
        "POST",
        f"/executions/{execution_id}/tool-result",
        {**auth(tenant), "Accept": "text/event-stream"},
        {"tool_call_id": calls[1]["tool_call_id"], "outcome": "success", "result": {"city": "Lyon"}},
    )
    assert types(rest) == ["resumed", "text", "node_complete", "final"]
    assert rest[-1].data["output"]["text"] == "You spent 5.50 near home."
    assert int(rest[0].id) == int(first[-1].id) + 1  # no gap, no duplicate with the first stream
    # the model got both results, in the order it called them
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED
    assert execution.resume_input is None


def test_tool_result_errors(api, tenant, other_tenant, client_tool_agent):
    first = start_with_client_tools(api, client_tool_agent, tenant)
    execution_id = first[0].data["execution_id"]
    call_id = next(e.data["tool_call_id"] for e in first if e.data["type"] == "tool_call_awaiting_client")

    unknown = post_result(api, tenant, execution_id, "tc_nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "tool_call_not_found"
    bad_outcome = post_result(api, tenant, execution_id, call_id, outcome="maybe")
    assert bad_outcome.status_code == 400 and bad_outcome.json()["error"]["field"] == "outcome"
    missing = api.post(
        f"/executions/{execution_id}/tool-result",
        headers=auth(tenant),
        json={"outcome": "success", "result": {}},
    )
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "tool_call_id_required"
    other = post_result(api, other_tenant, execution_id, call_id)
    assert other.status_code == 404  # another tenant cannot see it
    assert post_result(api, tenant, execution_id, call_id).status_code == 200
    duplicate = post_result(api, tenant, execution_id, call_id)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "tool_result_already_submitted"

    api.post(f"/executions/{execution_id}/cancel", headers=auth(tenant))
    wrong_state = post_result(api, tenant, execution_id, call_id)
    assert wrong_state.status_code == 409
    assert wrong_state.json()["error"]["code"] == "execution_not_awaiting_client_tool"


def test_an_error_outcome_reaches_the_model(api, tenant, client_tool_agent):
    first = start_with_client_tools(api, client_tool_agent, tenant)
    execution_id = first[0].data["execution_id"]
    for call in (e.data for e in first if e.data["type"] == "tool_call_awaiting_client"):
        post_result(api, tenant, execution_id, call["tool_call_id"], {"message": "denied"}, outcome="error")
    execution = wait_for(lambda: Execution.objects.filter(id=execution_uuid(execution_id), state="completed").first())
    assert execution.outputs["text"] == "You spent 5.50 near home."


def test_sync_execute_returns_awaiting_client_tool(api, tenant, client_tool_agent):
    response = execute(api, client_tool_agent, tenant, client_tools=CLIENT_TOOLS)
    assert response.json()["data"]["status"] == "awaiting_client_tool"


def test_client_tools_are_ignored_by_nodes_that_do_not_accept_them(api, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "model": {
                "provider": "builtin",
                "script": [{"tool_calls": [{"name": "get_location", "arguments": {}}]}, {"text": "done"}],
            },
        }
    )
    events = start_with_client_tools(api, agent, tenant)
    assert "tool_call_awaiting_client" not in types(events)
    result = next(e.data for e in events if e.data["type"] == "tool_result")
    assert result["outcome"] == "error"  # an unknown tool for this node
    assert events[-1].data["type"] == "final"


# --- human gates -----------------------------------------------------------------------------------


def gate_workflow(**gate):
    return (
        {"id": "draft", "type": "ai", "model": {"provider": "builtin", "reply": "draft"}},
        {"id": "review", "type": "human_gate", "prompt": "Send {{nodes.draft.text}}?", **gate},
        {"id": "send", "type": "ai", "model": {"provider": "builtin", "reply": "sent"}},
    )


def decide(api, tenant, execution_id, decision, **kwargs):
    return api.post(
        f"/executions/{execution_id}/approval",
        headers={**auth(tenant), **kwargs},
        json={"decision": decision, "comment": "looks good"},
    )


def test_gate_approve_resumes(api, tenant, workflow_agent):
    agent = workflow_agent(*gate_workflow())
    first = stream_agent(api, agent, tenant)
    assert first[-1].data["type"] == "suspended"
    assert first[-1].data["status"] == "awaiting_approval"
    assert first[-1].data["prompt"] == "Send draft?"
    execution_id = first[0].data["execution_id"]
    response = decide(api, tenant, execution_id, "approve")
    assert response.status_code == 200
    assert response.json()["data"]["decision"] == "approved"
    execution = wait_for(lambda: Execution.objects.filter(id=execution_uuid(execution_id), state="completed").first())
    assert execution.outputs["text"] == "sent"
    assert execution.checkpoint["node_outputs"]["review"]["decision"] == "approved"
    again = decide(api, tenant, execution_id, "approve")
    assert again.status_code == 409 and again.json()["error"]["code"] == "execution_not_awaiting_approval"


def test_gate_reject_fails_the_execution(api, tenant, workflow_agent):
    agent = workflow_agent(*gate_workflow())
    first = stream_agent(api, agent, tenant)
    rest = stream(
        api,
        "POST",
        f"/executions/{first[0].data['execution_id']}/approval",
        {**auth(tenant), "Accept": "text/event-stream"},
        {"decision": "reject"},
    )
    assert types(rest) == ["resumed", "error"]
    assert rest[-1].data["status"] == "failed"
    assert rest[-1].data["code"] == "approval_rejected"


def test_gate_reject_can_continue(api, tenant, workflow_agent):
    agent = workflow_agent(*gate_workflow(on_reject="continue"))
    first = stream_agent(api, agent, tenant)
    rest = stream(
        api,
        "POST",
        f"/executions/{first[0].data['execution_id']}/approval",
        {**auth(tenant), "Accept": "text/event-stream"},
        {"decision": "reject"},
    )
    assert rest[-1].data["type"] == "final"


@pytest.mark.parametrize("default, final_type", [("approve", "final"), ("reject", "error")])
def test_gate_timeout_takes_the_default_decision(api, tenant, workflow_agent, default, final_type):
    agent = workflow_agent(*gate_workflow(timeout_seconds=1, default_decision=default))
    first = stream_agent(api, agent, tenant)
    assert first[-1].data["expires_at"]
    assert first[-1].data["default_decision"] == ("approved" if default == "approve" else "rejected")
    api.runtime.time_out(execution_uuid(first[0].data["execution_id"]))  # the reaper, once the second passed
    rest = stream(
        api,
        "GET",
        f"/executions/{first[0].data['execution_id']}/events",
        {**auth(tenant), "Last-Event-ID": first[-1].id},
    )
    assert rest[0].data["type"] == "resumed"
    assert rest[-1].data["type"] == final_type
    execution = Execution.objects.get(id=execution_uuid(first[0].data["execution_id"]))
    if default == "approve":
        assert execution.checkpoint["node_outputs"]["review"]["decided_by"] == "timeout"
    else:
        assert execution.failure_reason == "approval_rejected"


def test_approval_validation(api, tenant, workflow_agent):
    agent = workflow_agent(*gate_workflow())
    execution_id = stream_agent(api, agent, tenant)[0].data["execution_id"]
    bad = api.post(f"/executions/{execution_id}/approval", headers=auth(tenant), json={"decision": "yes"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_decision"
    long_comment = api.post(
        f"/executions/{execution_id}/approval",
        headers=auth(tenant),
        json={"decision": "approve", "comment": "x" * 2001},
    )
    assert long_comment.status_code == 400 and long_comment.json()["error"]["field"] == "comment"
    ok = api.post(
        f"/executions/{execution_id}/approval",
        headers=auth(tenant),
        json={"decision": "approve", "comment": "x" * 2000},
    )
    assert ok.status_code == 200


# --- external events -------------------------------------------------------------------------------


def test_external_event_resumes_with_its_payload(api, tenant, workflow_agent):
    agent = workflow_agent(
        {"id": "wait", "type": "wait_event", "event": "payment_received"},
        {
            "id": "thanks",
            "type": "ai",
            "model": {"provider": "builtin"},
            "prompt": "Paid {{nodes.wait.payload.amount}}",
        },
    )
    first = stream_agent(api, agent, tenant)
    assert first[-1].data["status"] == "waiting_for_external_event"
    assert first[-1].data["event"] == "payment_received"
    execution_id = first[0].data["execution_id"]
    url = f"/executions/{execution_id}/external-event"
    wrong = api.post(url, headers=auth(tenant), json={"event": "refund", "payload": {}})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "unexpected_event"
    rest = stream(
        api,
        "POST",
        url,
        {**auth(tenant), "Accept": "text/event-stream"},
        {"event": "payment_received", "payload": {"amount": "12.00"}},
    )
    assert rest[0].data["type"] == "resumed"
    assert rest[-1].data["type"] == "final"
    assert "Paid 12.00" in rest[-1].data["output"]["text"]
    again = api.post(url, headers=auth(tenant), json={"event": "payment_received"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "execution_not_waiting_for_external_event"


def test_external_event_timeout_fails_the_wait(api, tenant, workflow_agent):
    agent = workflow_agent({"id": "wait", "type": "wait_event", "timeout_seconds": 1})
    first = stream_agent(api, agent, tenant)
    api.runtime.time_out(execution_uuid(first[0].data["execution_id"]))  # the reaper, once the second passed
    rest = stream(
        api,
        "GET",
        f"/executions/{first[0].data['execution_id']}/events",
        {**auth(tenant), "Last-Event-ID": first[-1].id},
    )
    assert rest[-1].data["type"] == "error"
    assert rest[-1].data["code"] == "event_timeout"


@pytest.mark.parametrize(
    "path, body",
    [
        ("approval", {"decision": "approve"}),
        ("external-event", {"event": "payment_received"}),
        ("tool-result", {"tool_call_id": "tc_1", "result": {}}),
    ],
)
def test_other_tenants_get_404_and_no_key_401(api, tenant, other_tenant, workflow_agent, path, body):
    agent = workflow_agent(*gate_workflow())
    execution_id = stream_agent(api, agent, tenant)[0].data["execution_id"]
    foreign = api.post(f"/executions/{execution_id}/{path}", headers=auth(other_tenant), json=body)
    assert foreign.status_code == 404
    assert api.post(f"/executions/{execution_id}/{path}", json=body).status_code == 401
    assert Execution.objects.get(id=execution_uuid(execution_id)).state == ExecutionState.AWAITING_APPROVAL
