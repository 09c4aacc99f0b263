"""Limits of the resume endpoints at their boundaries (in-process: the rows are set up directly)."""

import json

import pytest

from executions.models import ExecutionState
from tests.factories import ExecutionFactory
from tests.helpers import auth

pytestmark = pytest.mark.django_db


@pytest.fixture
def suspended(tenant, agent):
    def make(state, node_state):
        return ExecutionFactory(
            agent=agent,
            principal=tenant.end_user_key.api_key.principal,
            state=state,
            checkpoint={
                "next_node": 0,
                "node_outputs": {},
                "node_state": {"node_id": "answer", "waiting": True, **node_state},
            },
        )

    return make


def post(client, tenant, execution, path, body):
    return client.post(
        f"/executions/{execution.id}/{path}",
        data=json.dumps(body),
        content_type="application/json",
        headers=auth(tenant),
    )


def padded(size: int) -> str:
    """A JSON string value whose encoding is exactly `size` bytes."""
    return "x" * (size - 2)


def test_tool_result_of_exactly_the_limit_passes_one_byte_more_fails(client, tenant, suspended, settings):
    settings.TOOL_RESULT_MAX_BYTES = 1000
    pending = [{"id": "tc_1", "name": "a", "arguments": {}}, {"id": "tc_2", "name": "b", "arguments": {}}]
    execution = suspended(ExecutionState.AWAITING_CLIENT_TOOL, {"pending": pending})
    too_big = post(client, tenant, execution, "tool-result", {"tool_call_id": "tc_1", "result": padded(1001)})
    assert too_big.status_code == 413
    assert too_big.json()["error"] == {
        "code": "result_too_large",
        "field": "result",
        "message": "result is limited to 1000 bytes of JSON.",
    }
    ok = post(client, tenant, execution, "tool-result", {"tool_call_id": "tc_1", "result": padded(1000)})
    assert ok.status_code == 200
    assert ok.json()["data"]["pending_tool_call_ids"] == ["tc_2"]
    execution.refresh_from_db()
    assert execution.state == ExecutionState.AWAITING_CLIENT_TOOL
    assert execution.resume_input == {"tool_results": {"tc_1": {"outcome": "success", "result": padded(1000)}}}


def test_the_last_result_requeues_the_execution(client, tenant, suspended):
    execution = suspended(
        ExecutionState.AWAITING_CLIENT_TOOL, {"pending": [{"id": "tc_1", "name": "a", "arguments": {}}]}
    )
    response = post(
        client, tenant, execution, "tool-result", {"tool_call_id": "tc_1", "outcome": "error", "result": None}
    )
    assert response.json()["data"] == {
        "execution_id": execution.public_id,
        "status": "queued",
        "pending_tool_call_ids": [],
    }
    execution.refresh_from_db()
    assert execution.resume_input == {"tool_results": {"tc_1": {"outcome": "error", "result": None}}}


def test_event_name_of_128_characters_passes_129_fails(client, tenant, suspended):
    execution = suspended(ExecutionState.WAITING_FOR_EXTERNAL_EVENT, {})
    assert post(client, tenant, execution, "external-event", {"event": "e" * 129}).status_code == 400
    assert post(client, tenant, execution, "external-event", {"event": ""}).status_code == 400
    assert post(client, tenant, execution, "external-event", {"event": "e" * 128}).status_code == 200


def test_event_payload_limit(client, tenant, suspended, settings):
    settings.TOOL_RESULT_MAX_BYTES = 500
    execution = suspended(ExecutionState.WAITING_FOR_EXTERNAL_EVENT, {})
    too_big = post(client, tenant, execution, "external-event", {"event": "x", "payload": padded(501)})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    assert post(client, tenant, execution, "external-event", {"event": "x", "payload": padded(500)}).status_code == 200


def test_invalid_json_body_is_400(client, tenant, suspended):
    execution = suspended(ExecutionState.AWAITING_APPROVAL, {})
    response = client.post(
        f"/executions/{execution.id}/approval", data="{nope", content_type="application/json", headers=auth(tenant)
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_end_user_keys_cannot_resume_another_end_users_execution(client, tenant, suspended):
    from accounts.models import ApiKeyKind
    from accounts.services import issue_api_key

    execution = suspended(ExecutionState.AWAITING_APPROVAL, {})
    other_user = issue_api_key(tenant.workspace, ApiKeyKind.END_USER, name="someone else")
    response = client.post(
        f"/executions/{execution.id}/approval",
        data={"decision": "approve"},
        content_type="application/json",
        headers={"X-API-Key": other_user.raw_key, "X-Workspace-Id": f"workspace:{tenant.workspace.id}"},
    )
    assert response.status_code == 404
    # the workspace key may
    response = client.post(
        f"/executions/{execution.id}/approval",
        data={"decision": "approve"},
        content_type="application/json",
        headers=auth(tenant, "workspace"),
    )
    assert response.status_code == 200
