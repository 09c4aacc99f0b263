"""Outbound webhooks, the API and the admin: POST/GET /webhooks, DELETE /webhooks/{id}; the signing
secret shown once; validation at its limits; workspace keys only; tenants apart."""

import base64

import pytest
from django.contrib.auth.models import User

from tests.helpers import auth, post
from webhooks.models import WebhookEndpoint
from webhooks.validation import URL_MAX_LENGTH

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/skillrun"
ALL_EVENTS = ["execution.completed", "execution.failed", "execution.cancelled", "execution.suspended"]


def register(client, tenant, body=None, kind="workspace"):
    return post(
        client, "/webhooks", body if body is not None else {"url": URL, "events": ALL_EVENTS}, auth(tenant, kind)
    )


def test_register_answers_the_secret_once_and_lists_without_it(client, tenant):
    response = register(client, tenant, {"url": URL, "events": ["execution.completed", "execution.failed"]})
    assert response.status_code == 201, response.content
    created = response.json()["data"]
    assert created["id"].startswith("webhook:")
    assert created["url"] == URL
    assert created["events"] == ["execution.completed", "execution.failed"]
    assert created["enabled"] is True
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    # stored as it is (it must sign every delivery), never answered again
    assert WebhookEndpoint.objects.get().secret == secret

    listing = client.get("/webhooks", headers=auth(tenant, "workspace"))
    assert listing.status_code == 200
    (listed,) = listing.json()["data"]
    assert "secret" not in listed and secret not in listing.content.decode()
    assert listed["id"] == created["id"] and listed["events"] == created["events"]


def test_each_endpoint_has_its_own_secret_and_repeated_events_count_once(client, tenant):
    first = register(client, tenant).json()["data"]
    second = register(client, tenant, {"url": URL, "events": ["execution.failed", "execution.failed"]}).json()["data"]
    assert first["secret"] != second["secret"]
    assert second["events"] == ["execution.failed"]


def test_delete(client, tenant):
    webhook_id = register(client, tenant).json()["data"]["id"]
    headers = auth(tenant, "workspace")
    assert client.delete(f"/webhooks/{webhook_id}", headers=headers).status_code == 204
    assert client.get("/webhooks", headers=headers).json()["data"] == []
    again = client.delete(f"/webhooks/{webhook_id}", headers=headers)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    # the bare uuid is the same id; garbage is a 404 too
    assert client.delete("/webhooks/not-a-uuid", headers=headers).status_code == 404


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"events": ALL_EVENTS}, "url_required", "url"),
        ({"url": 42, "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": "ftp://hooks.example.com/x", "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": "hooks.example.com/x", "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": "https:///path-only", "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": "https://user:pw@hooks.example.com/", "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": "https://hooks.example.com/a b", "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": "https://hooks.example.com:99999/", "events": ALL_EVENTS}, "invalid_url", "url"),
        ({"url": URL}, "events_required", "events"),
        ({"url": URL, "events": []}, "invalid_events", "events"),
        ({"url": URL, "events": "execution.completed"}, "invalid_events", "events"),
        ({"url": URL, "events": ["execution.completed", "execution.started"]}, "invalid_events", "events[1]"),
        ({"url": URL, "events": ALL_EVENTS, "description": "x" * 201}, "invalid_description", "description"),
    ],
)
def test_validation(client, tenant, body, code, field):
    response = register(client, tenant, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert not WebhookEndpoint.objects.exists()


def test_url_length_limit_at_its_boundary(client, tenant):
    base = "https://hooks.example.com/"
    longest = base + "a" * (URL_MAX_LENGTH - len(base))
    assert register(client, tenant, {"url": longest, "events": ALL_EVENTS}).status_code == 201
    too_long = register(client, tenant, {"url": longest + "a", "events": ALL_EVENTS})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_url"


def test_endpoints_per_workspace_limit(client, tenant, other_tenant, settings):
    settings.WEBHOOK_MAX_ENDPOINTS = 2
    assert [register(client, tenant).status_code for _ in range(2)] == [201, 201]
    third = register(client, tenant)
    assert third.status_code == 409 and third.json()["error"]["code"] == "too_many_webhooks"
    assert WebhookEndpoint.objects.filter(workspace=tenant.workspace).count() == 2
    assert register(client, other_tenant).status_code == 201  # per workspace
    webhook_id = client.get("/webhooks", headers=auth(tenant, "workspace")).json()["data"][0]["id"]
    client.delete(f"/webhooks/{webhook_id}", headers=auth(tenant, "workspace"))
    assert register(client, tenant).status_code == 201  # room again


def test_tenants_never_see_each_others_endpoints(client, tenant, other_tenant):
    webhook_id = register(client, tenant).json()["data"]["id"]
    assert client.get("/webhooks", headers=auth(other_tenant, "workspace")).json()["data"] == []
    response = client.delete(f"/webhooks/{webhook_id}", headers=auth(other_tenant, "workspace"))
    assert response.status_code == 404
    assert WebhookEndpoint.objects.filter(workspace=tenant.workspace).count() == 1


def test_workspace_keys_only(client, tenant):
    webhook_id = register(client, tenant).json()["data"]["id"]
    for response in (
        register(client, tenant, kind="end_user"),
        client.get("/webhooks", headers=auth(tenant, "end_user")),
        client.delete(f"/webhooks/{webhook_id}", headers=auth(tenant, "end_user")),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        assert "workspace (wak_) key" in response.json()["error"]["message"]
    assert WebhookEndpoint.objects.count() == 1
    assert client.get("/webhooks").status_code == 401


def test_the_routes_are_in_the_openapi_document(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"get", "post"} <= set(schema["paths"]["/webhooks"])
    assert "delete" in schema["paths"]["/webhooks/{webhook_id}"]
    created = schema["paths"]["/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    envelope = schema["components"]["schemas"][created["$ref"].rsplit("/", 1)[-1]]
    new_webhook = schema["components"]["schemas"][envelope["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    assert {"id", "url", "events", "secret"} <= set(new_webhook["properties"])
    listed = schema["components"]["schemas"]["WebhookOutput"]
    assert "secret" not in listed["properties"]
    request = schema["paths"]["/webhooks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = schema["components"]["schemas"][request["$ref"].rsplit("/", 1)[-1]]
    assert body["properties"]["url"]["maxLength"] == URL_MAX_LENGTH
    assert body["properties"]["events"]["items"] == {"$ref": "#/components/schemas/WebhookEvent"}
    assert schema["components"]["schemas"]["WebhookEvent"]["enum"] == ALL_EVENTS


# --- the admin --------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    return client


def test_registering_in_the_admin_shows_the_secret_once(admin_client, tenant):
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"workspace": str(tenant.workspace.id), "url": URL, "events": ["execution.completed"], "description": "crm"},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    secret = next(m.split(": ")[-1] for m in messages if "will not be shown again" in m)
    endpoint = WebhookEndpoint.objects.get(description="crm")
    assert endpoint.secret == secret and secret.startswith("whsec_")
    assert endpoint.events == ["execution.completed"] and endpoint.tenant_id == tenant.tenant.id
    page = admin_client.get(f"/admin/webhooks/webhookendpoint/{endpoint.id}/change/").content.decode()
    assert URL in page and secret not in page
    assert secret not in admin_client.get("/admin/webhooks/webhookendpoint/").content.decode()


def test_the_admin_refuses_a_url_that_is_not_http(admin_client, tenant):
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"workspace": str(tenant.workspace.id), "url": "ftp://hooks.example.com/", "events": ["execution.failed"]},
    )
    assert response.status_code == 200  # the form again, with its error
    assert not WebhookEndpoint.objects.exists()


def test_editing_an_endpoint_in_the_admin_keeps_its_secret(admin_client, tenant):
    created = register(admin_client, tenant).json()["data"]
    endpoint = WebhookEndpoint.objects.get()
    response = admin_client.post(
        f"/admin/webhooks/webhookendpoint/{endpoint.id}/change/",
        {"url": "https://other.example.com/in", "events": ["execution.failed"], "description": "", "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    endpoint.refresh_from_db()
    assert endpoint.url == "https://other.example.com/in" and endpoint.events == ["execution.failed"]
    assert endpoint.secret == created["secret"]
    admin_client.post(
        "/admin/webhooks/webhookendpoint/", {"action": "disable_endpoints", "_selected_action": [str(endpoint.id)]}
    )
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at and endpoint.disabled_reason == "disabled by an operator"
