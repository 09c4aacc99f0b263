"""The execute body's limits, each at its boundary: exactly at the limit passes, one over fails."""

import json

import pytest

from agents.models import Agent
from agents.services import publish_agent_version
from executions.models import Execution
from files.models import StoredFile
from tests.helpers import auth, execute

pytestmark = pytest.mark.django_db


def assert_error(response, status, code, field):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert Execution.objects.count() == 0


def stored(tenant, n):
    return [
        StoredFile.objects.create(
            workspace=tenant.workspace,
            principal=tenant.end_user_key.api_key.principal,  # the caller's own uploads
            purpose="attachment",
            storage_key=f"attachments/{tenant.workspace.id}/{i}.pdf",
            filename=f"{i}.pdf",
            content_type="application/pdf",
            size_bytes=10,
        )
        for i in range(n)
    ]


def test_ten_attachments_pass_eleven_fail(client, tenant, agent):
    files = stored(tenant, 11)
    refs = [{"storage_key": f.storage_key, "filename": f.filename} for f in files]
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", "attachments": refs}),
        400,
        "too_many_attachments",
        "attachments",
    )
    assert (
        execute(
            client, agent, tenant, route="execute/stream", body={"message": "hi", "attachments": refs[:10]}
        ).status_code
        == 200
    )
    inputs = Execution.objects.get().inputs
    assert [a["storage_key"] for a in inputs["attachments"]] == [f.storage_key for f in files[:10]]
    assert inputs["attachments"][0]["content_type"] == "application/pdf"


def test_attachment_must_exist_in_this_workspace(client, tenant, other_tenant, agent):
    foreign = stored(other_tenant, 1)[0]
    mine = stored(tenant, 1)[0]
    body = {"message": "hi", "attachments": [{"storage_key": mine.storage_key}, {"storage_key": foreign.storage_key}]}
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body=body),
        400,
        "attachment_not_found",
        "attachments[1].storage_key",
    )
    assert_error(
        execute(
            client, agent, tenant, route="execute/stream", body={"message": "hi", "attachments": [{"filename": "x"}]}
        ),
        400,
        "invalid_attachment",
        "attachments[0].storage_key",
    )
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", "attachments": "x"}),
        400,
        "invalid_attachments",
        "attachments",
    )


def variables_of_size(size: int) -> dict:
    overhead = len(json.dumps({"v": ""}, separators=(",", ":")))
    return {"v": "x" * (size - overhead)}


def test_variables_of_16_kib_pass_one_byte_more_fails(client, tenant, agent):
    too_big = variables_of_size(16 * 1024 + 1)
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", "variables": too_big}),
        400,
        "variables_too_large",
        "variables",
    )
    assert (
        execute(
            client,
            agent,
            tenant,
            route="execute/stream",
            body={"message": "hi", "variables": variables_of_size(16 * 1024)},
        ).status_code
        == 200
    )


def test_variables_must_be_an_object(client, tenant, agent):
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", "variables": [1]}),
        400,
        "invalid_variables",
        "variables",
    )


def tools(n, prefix="tool"):
    return [{"name": f"{prefix}_{i}", "description": "d", "parameters": {"type": "object"}} for i in range(n)]


def test_32_client_tools_pass_33_fail(client, tenant, agent):
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", "client_tools": tools(33)}),
        400,
        "too_many_client_tools",
        "client_tools",
    )
    assert (
        execute(
            client, agent, tenant, route="execute/stream", body={"message": "hi", "client_tools": tools(32)}
        ).status_code
        == 200
    )
    assert len(Execution.objects.get().inputs["client_tools"]) == 32


@pytest.mark.parametrize("name", ["Query", "1tool", "_tool", "tool-name", "t" * 65, "", "tool name"])
def test_client_tool_names_must_match_the_pattern(client, tenant, agent, name):
    body = {"message": "hi", "client_tools": [{"name": name}]}
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body=body),
        400,
        "invalid_client_tool_name",
        "client_tools[0].name",
    )


@pytest.mark.parametrize("name", ["a", "t" * 64, "query_transactions", "a1_b2"])
def test_valid_client_tool_names(client, tenant, agent, name):
    assert (
        execute(
            client, agent, tenant, route="execute/stream", body={"message": "hi", "client_tools": [{"name": name}]}
        ).status_code
        == 200
    )


def test_client_tools_must_not_collide_with_server_tools_or_each_other(client, tenant):
    agent = Agent.objects.create(workspace=tenant.workspace, name="with tools")
    publish_agent_version(
        agent,
        {
            "nodes": [
                {"id": "a", "type": "ai", "tools": ["web_search"], "model": {"provider": "builtin"}},
                {"id": "t", "type": "tool", "tool": "send_email"},
            ]
        },
    )
    for server_tool in ("web_search", "send_email"):
        body = {"message": "hi", "client_tools": [{"name": "ok_tool"}, {"name": server_tool}]}
        assert_error(
            execute(client, agent, tenant, route="execute/stream", body=body),
            400,
            "client_tool_name_collision",
            "client_tools[1].name",
        )
    body = {"message": "hi", "client_tools": [{"name": "dup"}, {"name": "dup"}]}
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body=body),
        400,
        "duplicate_client_tool",
        "client_tools[1].name",
    )


def test_message_optional_when_the_agent_does_not_require_it(client, tenant):
    agent = Agent.objects.create(workspace=tenant.workspace, name="wizard", requires_user_message=False)
    publish_agent_version(agent, {"nodes": [{"id": "a", "type": "ai", "model": {"provider": "builtin"}}]})
    assert (
        execute(client, agent, tenant, route="execute/stream", body={"variables": {"tone": "formal"}}).status_code
        == 200
    )
    assert Execution.objects.get().inputs == {"variables": {"tone": "formal"}}


@pytest.mark.parametrize("field", ["conversation_scope", "external_user_id"])
def test_identifier_fields(client, tenant, agent, field):
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", field: 5}),
        400,
        f"invalid_{field}",
        field,
    )
    assert_error(
        execute(client, agent, tenant, route="execute/stream", body={"message": "hi", field: "x" * 256}),
        400,
        f"invalid_{field}",
        field,
    )
    if field == "external_user_id":  # a workspace key may name any user (an end user only itself)
        wak = auth(tenant, "workspace")
        response = execute(client, agent, route="execute/stream", headers=wak, body={"message": "hi", field: "x" * 255})
        assert response.status_code == 200
    else:  # a well-formed scope must also name one of the caller's conversations
        assert (
            execute(client, agent, tenant, route="execute/stream", body={"message": "hi", field: "x" * 255}).status_code
            == 404
        )
