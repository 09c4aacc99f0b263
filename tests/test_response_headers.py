"""Every authenticated response carries X-Workspace-Id and X-App-Version (the current AppVersion)."""

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.services import publish_agent_version
from executions.models import Execution
from tests.helpers import auth, builtin_workflow

pytestmark = pytest.mark.django_db


def assert_headers(response, tenant):
    tenant.workspace.refresh_from_db()
    assert response.headers["X-Workspace-Id"] == f"workspace:{tenant.workspace.id}"
    assert response.headers["X-App-Version"] == tenant.workspace.app_version_id != ""


def test_json_and_sse_routes_carry_the_headers(client, tenant, agent):
    stream = client.post(
        f"/agents/{agent.id}/execute/stream",
        data={"message": "hi"},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert_headers(stream, tenant)
    execution = Execution.objects.get()
    for response in (
        client.get(f"/executions/{execution.id}", headers=auth(tenant)),
        client.post(f"/executions/{execution.id}/stream-token", headers=auth(tenant)),
        client.get(f"/executions/{execution.id}/events", headers={**auth(tenant), "Last-Event-ID": "1"}),
        client.post(
            f"/agents/{agent.id}/execute/batch",
            data={"items": [{"key": "a", "message": "hi"}]},
            content_type="application/json",
            headers=auth(tenant),
        ),
        client.post(
            f"/agents/{agent.id}/preview-credits", data={}, content_type="application/json", headers=auth(tenant)
        ),
        client.post(
            f"/executions/{execution.id}/tool-result",
            data={"tool_call_id": "tc", "result": {}},
            content_type="application/json",
            headers=auth(tenant),
        ),
        client.post(
            f"/executions/{execution.id}/approval",
            data={"decision": "approve"},
            content_type="application/json",
            headers=auth(tenant),
        ),
        client.post(
            f"/executions/{execution.id}/external-event",
            data={"event": "x"},
            content_type="application/json",
            headers=auth(tenant),
        ),
        client.post(f"/executions/{execution.id}/cancel", headers=auth(tenant)),
        client.post(
            "/attachments/upload", {"file": SimpleUploadedFile("a.txt", b"hi", "text/plain")}, headers=auth(tenant)
        ),
        # error responses of an authenticated caller too
        client.post(
            f"/agents/{agent.id}/execute", data={"message": ""}, content_type="application/json", headers=auth(tenant)
        ),
        client.get("/executions/00000000-0000-4000-8000-000000000000", headers=auth(tenant)),
    ):
        assert_headers(response, tenant)


def test_publishing_changes_the_app_version(client, tenant, agent):
    before = client.get(f"/executions/{agent.id}", headers=auth(tenant)).headers["X-App-Version"]
    version = publish_agent_version(agent, builtin_workflow(reply="v2"))
    after = client.get(f"/executions/{agent.id}", headers=auth(tenant)).headers["X-App-Version"]
    assert before != after == str(version.id)


def test_unauthenticated_responses_do_not(client, agent):
    response = client.post(f"/agents/{agent.id}/execute", data={"message": "hi"}, content_type="application/json")
    assert response.status_code == 401
    assert "X-Workspace-Id" not in response.headers


@pytest.mark.django_db(transaction=True)
def test_over_real_http(live, tenant, agent):
    response = httpx.post(f"{live}/agents/{agent.id}/execute", json={"message": "hi"}, headers=auth(tenant), timeout=30)
    assert response.status_code == 200
    assert_headers(response, tenant)
