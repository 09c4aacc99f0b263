"""The OpenAPI schema documents every route; EventSource stream tokens."""

import time

import pytest
from drf_spectacular.validation import validate_schema

from accounts.services import revoke_api_key
from executions.models import Execution
from tests.factories import ExecutionFactory
from tests.helpers import auth, read_stream, stream_agent

pytestmark = pytest.mark.django_db


def test_schema_documents_every_route(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    for path in (
        "/agents/{agent_id}/execute",
        "/agents/{agent_id}/execute/stream",
        "/executions/{execution_id}",
        "/executions/{execution_id}/events",
        "/executions/{execution_id}/cancel",
        "/executions/{execution_id}/stream-token",
        "/agents/{agent_id}/execute/batch",
        "/agents/{agent_id}/preview-credits",
        "/attachments/upload",
        "/executions/{execution_id}/tool-result",
        "/executions/{execution_id}/approval",
        "/executions/{execution_id}/external-event",
        "/v1/spaces/{space_id}/skills/{slug}/executions",
        "/v1/spaces/{space_id}/skills/executions",
        "/v1/spaces/{space_id}/skills/executions/{execution_id}",
        "/v1/spaces/{space_id}/skills/executions/{execution_id}/cancel",
        "/v1/spaces/{space_id}/skills/executions/{execution_id}/events",
        "/v1/spaces/{space_id}/skills/executions/by-chat-tool-call/{tool_call_id}",
        "/v1/artifacts/{artifact_id}/download",
        "/v1/files/",
        "/v1/files/{filename}",
        "/my/conversations",
        "/my/conversations/{conversation_id}/archive",
        "/my/conversations/{conversation_id}/messages",
        "/my/conversations/{conversation_id}/messages/{message_id}/feedback",
        "/users/{external_user_id}/memory",
        "/users/{external_user_id}/memory/{fact_id}",
    ):
        assert path in schema["paths"], path
    assert {"ApiKeyHeader", "BearerKey"} <= set(schema["components"]["securitySchemes"])
    approval = schema["paths"]["/executions/{execution_id}/approval"]["post"]
    body = resolve(schema, approval["requestBody"]["content"]["application/json"]["schema"])
    assert body["properties"]["decision"]["enum"] == ["approve", "reject"]


def test_the_schema_is_a_valid_openapi_3_0_document(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    validate_schema(schema)  # raises on the first violation of the OpenAPI 3.0 meta-schema


def resolve(schema: dict, node: dict) -> dict:
    """A `$ref` of the document, followed."""
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_a_limit_changed_in_settings_changes_the_schema(client, settings):
    def tool_result_limit():
        schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        operation = schema["paths"]["/executions/{execution_id}/tool-result"]["post"]
        body = resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])
        return body["properties"]["result"]["x-maxBytes"]

    settings.TOOL_RESULT_MAX_BYTES = 1000
    assert tool_result_limit() == 1000
    settings.TOOL_RESULT_MAX_BYTES = 2048
    assert tool_result_limit() == 2048


def test_the_batch_item_limit_is_the_setting_in_the_schema_and_in_the_check(client, tenant, agent, settings):
    def documented_limit():
        schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        operation = schema["paths"]["/agents/{agent_id}/execute/batch"]["post"]
        body = resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])
        return body["properties"]["items"]["maxItems"]

    def batch(count):
        items = [{"key": f"item-{i}", "message": "hi"} for i in range(count)]
        return client.post(
            f"/agents/{agent.id}/execute/batch",
            data={"items": items},
            content_type="application/json",
            headers=auth(tenant),
        )

    for limit in (3, 5):
        settings.BATCH_MAX_ITEMS = limit
        assert documented_limit() == limit
        refused = batch(limit + 1)
        assert refused.status_code == 400
        assert (refused.json()["error"]["code"], refused.json()["error"]["field"]) == ("too_many_items", "items")
        assert batch(limit).status_code == 200
    assert Execution.objects.filter(source="batch_item").count() == 3 + 5


@pytest.mark.django_db(transaction=True)
def test_eventsource_reads_with_a_stream_token_and_query_resume(live, tenant, other_tenant, agent, settings):
    import httpx

    events = stream_agent(live, agent, tenant)
    public_id = events[0].data["execution_id"]
    issued = httpx.post(f"{live}/executions/{public_id}/stream-token", headers=auth(tenant), timeout=10)
    assert issued.status_code == 201
    token = issued.json()["data"]["token"]
    url = f"{live}/executions/{public_id}/events"

    replay = read_stream("GET", f"{url}?token={token}&lastEventId=2", {})
    assert [e.data for e in replay] == [e.data for e in events[2:]]

    assert httpx.get(f"{url}?token=forged{token}", timeout=10).json()["error"]["code"] == "invalid_stream_token"
    # another tenant cannot get a token for it, and a token is bound to one execution
    assert (
        httpx.post(f"{live}/executions/{public_id}/stream-token", headers=auth(other_tenant), timeout=10).status_code
        == 404
    )
    other = stream_agent(live, agent, tenant)
    response = httpx.get(f"{live}/executions/{other[0].data['execution_id']}/events?token={token}", timeout=10)
    assert response.status_code == 401
    # revoking the key revokes its tokens
    revoke_api_key(tenant.end_user_key.api_key)
    assert httpx.get(f"{url}?token={token}", timeout=10).status_code == 401


def test_expired_stream_token_is_401(client, tenant, agent, settings):
    from accounts.authentication import Caller
    from executions.stream_tokens import issue_stream_token

    execution = ExecutionFactory(workspace=tenant.workspace, principal=tenant.end_user_key.api_key.principal)
    token = issue_stream_token(Caller(api_key=tenant.end_user_key.api_key), execution)
    settings.SSE_TOKEN_MAX_AGE_SECONDS = 0
    time.sleep(1.1)
    response = client.get(f"/executions/{execution.id}/events", {"token": token})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "stream_token_expired"
