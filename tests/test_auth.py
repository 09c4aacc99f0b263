"""API keys: three header forms, X-Workspace-Id, revocation, tenant isolation, hashed storage."""

import httpx
import pytest
from django.db import connection

from accounts.models import ApiKey
from accounts.services import revoke_api_key
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def execution(tenant, agent):
    return ExecutionFactory(
        agent=agent, principal=tenant.end_user_key.api_key.principal, inputs={"message": "hi"}, state="completed"
    )


def key_of(new_tenant):
    return new_tenant.end_user_key.raw_key


@pytest.mark.parametrize("header", ["x-api-key", "bearer", "bare"])
def test_the_three_header_forms_authenticate(client, tenant, execution, header):
    key = key_of(tenant)
    headers = {
        "x-api-key": {"X-API-Key": key},
        "bearer": {"Authorization": f"Bearer {key}"},
        "bare": {"Authorization": key},
    }[header]
    response = client.get(f"/executions/{execution.id}", headers=headers)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == f"execution:{execution.id}"


def test_missing_key_is_401(client, execution):
    response = client.get(f"/executions/{execution.id}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"


@pytest.mark.parametrize("bad", ["wak_nope", "eak_0123456789abcdefXXXXXXXX", "garbage", "Bearer "])
def test_invalid_key_is_401(client, execution, bad):
    response = client.get(f"/executions/{execution.id}", headers={"Authorization": bad})
    assert response.status_code == 401


def test_right_prefix_wrong_secret_is_401(client, tenant, execution):
    key = key_of(tenant)
    response = client.get(f"/executions/{execution.id}", headers={"X-API-Key": key[:-3] + "xyz"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_401(client, tenant, execution):
    revoke_api_key(tenant.end_user_key.api_key)
    response = client.get(f"/executions/{execution.id}", headers={"X-API-Key": key_of(tenant)})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_other_tenant_gets_404_on_every_execution_route(client, other_tenant, execution):
    headers = {"X-API-Key": key_of(other_tenant)}
    assert client.get(f"/executions/{execution.id}", headers=headers).status_code == 404
    assert client.post(f"/executions/{execution.id}/cancel", headers=headers).status_code == 404
    assert client.get(f"/executions/execution:{execution.id}", headers=headers).json()["error"]["code"] == "not_found"


def test_other_tenants_agent_is_404(client, other_tenant, agent):
    response = client.post(
        f"/agents/{agent.id}/execute",
        data={"message": "hi"},
        content_type="application/json",
        headers={"X-API-Key": key_of(other_tenant)},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_end_user_keys_read_only_their_own_executions(client, tenant, execution):
    from accounts.models import ApiKeyKind
    from accounts.services import issue_api_key

    other_user = issue_api_key(tenant.workspace, ApiKeyKind.END_USER).raw_key
    assert client.get(f"/executions/{execution.id}", headers={"X-API-Key": other_user}).status_code == 404
    workspace_key = tenant.workspace_key.raw_key
    assert client.get(f"/executions/{execution.id}", headers={"X-API-Key": workspace_key}).status_code == 200


def test_workspace_header_must_name_the_keys_workspace(client, tenant, other_tenant, execution):
    ok = {"X-API-Key": key_of(tenant), "X-Workspace-Id": f"workspace:{tenant.workspace.id}"}
    assert client.get(f"/executions/{execution.id}", headers=ok).status_code == 200
    wrong = {**ok, "X-Workspace-Id": f"workspace:{other_tenant.workspace.id}"}
    response = client.get(f"/executions/{execution.id}", headers=wrong)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "workspace_mismatch"


def test_unknown_or_malformed_ids_are_404(client, tenant):
    headers = {"X-API-Key": key_of(tenant)}
    assert client.get("/executions/not-a-uuid", headers=headers).status_code == 404
    assert client.get("/executions/00000000-0000-4000-8000-000000000000", headers=headers).status_code == 404


def test_keys_are_stored_hashed_and_never_in_the_database(tenant):
    raw_keys = [tenant.end_user_key.raw_key, tenant.workspace_key.raw_key]
    for stored in ApiKey.objects.all():
        assert stored.prefix in {k[:16] for k in raw_keys}
        assert stored.secret_hash not in raw_keys and len(stored.secret_hash) == 64
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(k)::text FROM accounts_apikey k")
        dumped = " ".join(row[0] for row in cursor.fetchall())
    for raw in raw_keys:
        assert raw not in dumped
        assert raw[16:] not in dumped


@pytest.mark.django_db(transaction=True)
def test_sse_routes_authenticate_too(live, tenant, other_tenant, agent):
    from tests.helpers import auth, stream_agent

    events = stream_agent(live, agent, tenant)
    url = f"{live}/executions/{events[0].data['execution_id']}/events"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"X-API-Key": "eak_revokedorwrongkey123456"}, timeout=10).status_code == 401
    assert httpx.get(url, headers=auth(other_tenant), timeout=10).status_code == 404
    stream_url = f"{live}/agents/{agent.id}/execute/stream"
    assert httpx.post(stream_url, json={"message": "x"}, timeout=10).status_code == 401
    assert httpx.post(stream_url, json={"message": "x"}, headers=auth(other_tenant), timeout=10).status_code == 404
