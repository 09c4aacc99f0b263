"""Bad input on every route, table-driven from the URL conf, against the live server: each answer is
a 4xx with a stable JSON error code, and no row of any table is written.

The routes come from the URL conf (a new route is covered without editing this file, and fails
here until PATH_VALUES can fill its path parameters); whether a route takes a body, and which
integer parameters it reads, comes from the OpenAPI document generated from the same views.
"""

import json

import httpx
import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator

from agents.models import Skill
from agents.services import publish_skill_version
from conversations.models import Conversation, Message
from core.permissions import IsWorkspaceKey
from executions.models import ExecutionState
from schedules.services import create_schedule
from tests.factories import ExecutionFactory
from tests.helpers import auth
from webhooks.services import check_create_endpoint

PROJECT_APPS = {"accounts", "agents", "executions", "conversations", "files", "webhooks", "schedules"}
# the operators' endpoints (health, Prometheus: tests/test_metrics.py) are not the API
NOT_API = (
    "admin/",
    "api/schema/",
    "api/docs/",
    "api/redoc/",
    "healthz",
    "livez",
    "readyz",
    "metrics",
    "files/download/",
)
WRITE_METHODS = ("post", "put", "patch", "delete")
# Webhooks from other services check their sender (a signature, the workspace's secret) before their
# body: tests/test_inbound_*.py send them these bad bodies from an authentic sender.
SENDER_CHECKED = ("inbound/",)

NUL = "a\u0000b"
SURROGATE = "\ud800"


def _deep(levels: int) -> str:
    return '{"k": ' + "[" * levels + "]" * levels + "}"


# (name, raw JSON body, code, field): every JSON body of every route, whatever its schema, since
# the checks run on the parsed body before any schema
BAD_JSON_BODIES = [
    ("nul in a value", json.dumps({"message": NUL}), "invalid_string", "message"),
    ("nul in a nested key", json.dumps({"variables": {NUL: 1}}), "invalid_string", "variables"),
    ("nul deep in a list", json.dumps({"items": [{"message": NUL}]}), "invalid_string", "items[0].message"),
    ("lone surrogate", json.dumps({"inputs": {"x": [SURROGATE]}}), "invalid_string", "inputs.x[0]"),
    ("lone surrogate key", json.dumps({SURROGATE: 1}), "invalid_string", None),
    ("10,000 levels", _deep(10_000), "json_too_deep", None),
    ("65 levels", _deep(64), "json_too_deep", "k" + "[0]" * 63),
    ("not an object", "[1, 2]", "invalid_request", None),
    ("NaN", '{"x": NaN}', "invalid_json", None),
    ("float overflow", '{"x": 1e400}', "invalid_json", None),
    ("not JSON", "{", "invalid_json", None),
    ("not UTF-8", b'{"x": "\xff"}', "invalid_json", None),
]


def _routes(patterns=None, prefix=""):
    """(route, view) of every URL pattern, routes as the URL conf writes them."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def needs_workspace_key(route: str) -> bool:
    """A route for workspace keys only (IsWorkspaceKey): an end-user key gets its 403 before the body is read."""
    view = dict(_routes())[route]
    return IsWorkspaceKey in getattr(getattr(view, "cls", None), "permission_classes", ())


def api_routes() -> list[str]:
    """Every route but the admin's, the docs' and the front door's page (`/`, the empty route)."""
    return [route for route, _ in _routes() if route and not route.startswith(NOT_API)]


def _openapi_path(route: str) -> str:
    for converter in ("str:", "uuid:", "path:", "int:"):
        route = route.replace(f"<{converter}", "{")
    return "/" + route.replace(">", "}")


@pytest.fixture(scope="module")
def openapi():
    return SchemaGenerator().get_schema(request=None, public=True)["paths"]


def operations(openapi, route: str) -> dict:
    path = _openapi_path(route)
    assert path in openapi, f"{path} is in the URL conf but not in the OpenAPI document"
    return openapi[path]


@pytest.fixture
def world(tenant, agent):
    """One of everything a path can name, so each request gets as far as its body."""
    principal = tenant.end_user_key.api_key.principal
    skill = Skill.objects.create(workspace=tenant.workspace, slug="report", name="report")
    publish_skill_version(skill, {"inputs_schema": {"type": "object"}, "instructions": "x"})
    execution = ExecutionFactory(
        agent=agent,
        principal=principal,
        state=ExecutionState.AWAITING_CLIENT_TOOL,
        checkpoint={"next_node": 0, "node_outputs": {}, "node_state": {"node_id": "answer", "waiting": True}},
    )
    conversation = Conversation.objects.create(workspace=tenant.workspace, principal=principal, agent=agent)
    message = Message.objects.create(conversation=conversation, role="assistant", content="hello")
    webhook = check_create_endpoint(
        workspace=tenant.workspace, url="https://hooks.example.com/", events=["execution.failed"]
    )
    schedule = create_schedule(
        workspace=tenant.workspace, principal=principal, agent=agent, cron="0 3 * * *", inputs={"message": "hi"}
    )
    return {
        "agent_id": str(agent.id),
        "execution_id": str(execution.id),
        "id": str(execution.id),
        "space_id": str(tenant.workspace.id),
        "slug": skill.slug,
        "conversation_id": str(conversation.id),
        "message_id": str(message.id),
        "external_user_id": "user-1",
        "fact_id": "00000000-0000-4000-8000-000000000001",
        "artifact_id": "00000000-0000-4000-8000-000000000002",
        "filename": "notes.txt",
        "tool_call_id": "call_1",
        "workspace_id": str(tenant.workspace.id),
        "webhook_id": str(webhook.endpoint.id),
        "schedule_id": str(schedule.id),
    }


def fill(route: str, values: dict, bad: str | None = None) -> str:
    """The route's URL with `values`; the parameter `bad` given NUL instead."""
    path = _openapi_path(route)
    for name, value in values.items():
        path = path.replace("{" + name + "}", "a%00b" if name == bad else value)
    assert "{" not in path, f"add the path parameters of {route} to the `world` fixture"
    return path


def row_counts() -> dict:
    return {
        model._meta.label: model.objects.count() for model in apps.get_models() if model._meta.app_label in PROJECT_APPS
    }


def assert_refused(response, status: int, code: str, field=...):
    assert response.status_code == status, (response.request.url, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code, error
    if field is not ...:
        assert error.get("field") == field, error


def _headers(tenant, route: str | None = None) -> dict:
    kind = "workspace" if route and needs_workspace_key(route) else "end_user"
    return {**auth(tenant, kind), "Idempotency-Key": "bad-input-1"}


def body_routes(openapi, media_type: str) -> list[tuple[str, str]]:
    return [
        (route, method)
        for route in api_routes()
        for method, operation in operations(openapi, route).items()
        if method in WRITE_METHODS and media_type in operation.get("requestBody", {}).get("content", {})
    ]


def test_every_api_route_is_in_the_table(openapi):
    """The tables below reach every route: each is in the OpenAPI document, and some take JSON bodies."""
    assert len(api_routes()) > 25
    assert len(body_routes(openapi, "application/json")) >= 10


def test_bad_json_bodies_on_every_json_route(live, tenant, world, openapi):
    refused = 0
    with httpx.Client(base_url=live, timeout=30) as client:
        for route, method in body_routes(openapi, "application/json"):
            url = fill(route, world)
            for name, body, code, field in BAD_JSON_BODIES if not route.startswith(SENDER_CHECKED) else []:
                before = row_counts()
                content = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
                headers = {**_headers(tenant, route), "Content-Type": "application/json"}
                response = client.request(method, url, content=content, headers=headers)
                assert_refused(response, 400, code, field)
                assert row_counts() == before, (route, name)
                refused += 1
            # a body that is not JSON at all: 415, before anything is read
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = _headers(tenant, route) | ({"Content-Type": content_type} if content_type else {})
                before = row_counts()
                response = client.request(method, url, content=b'{"message": "hi"}', headers=headers)
                assert_refused(response, 415, "unsupported_media_type")
                assert row_counts() == before, (route, content_type)
    assert refused >= 10 * len(BAD_JSON_BODIES)


def test_json_bodies_on_upload_routes_are_415(live, tenant, world, openapi):
    routes = body_routes(openapi, "multipart/form-data")
    assert len(routes) == 2
    with httpx.Client(base_url=live, timeout=30) as client:
        for route, method in routes:
            before = row_counts()
            response = client.request(method, fill(route, world), json={"file": "x"}, headers=auth(tenant))
            assert_refused(response, 415, "unsupported_media_type")
            nul_name = client.request(
                method, fill(route, world), files={"file": ("a\x00b.txt", b"hi", "text/plain")}, headers=auth(tenant)
            )
            assert nul_name.status_code in (201, 400), nul_name.text  # the name is sanitised, or refused
            if nul_name.status_code == 201:
                assert "\x00" not in nul_name.json()["data"]["filename"]
            else:
                assert row_counts() == before


def test_nul_in_any_path_parameter_is_a_json_404(live, tenant, world, openapi):
    checked = 0
    with httpx.Client(base_url=live, timeout=30) as client:
        for route in api_routes():
            names = [name for name in world if "{" + name + "}" in _openapi_path(route)]
            for method in operations(openapi, route):
                for name in names:
                    before = row_counts()
                    response = client.request(method, fill(route, world, bad=name), headers=_headers(tenant))
                    assert_refused(response, 404, "not_found")
                    assert row_counts() == before
                    checked += 1
    assert checked > 30


@pytest.mark.parametrize(
    "url",
    [
        "/v1/spaces/{space_id}/skills/re%00port/executions",
        "/v1/spaces/{space_id}/skills/executions/by-chat-tool-call/%00",
        "/v1/files/a%00b",
        "/users/a%00b/memory",
    ],
)
def test_the_reported_nul_paths(live, tenant, world, url):
    for method in ("GET", "POST", "DELETE"):  # refused before the route's methods are looked at
        response = httpx.request(method, live + url.format(**world), headers=auth(tenant, "workspace"))
        assert_refused(response, 404, "not_found")


def test_nul_in_any_query_parameter_is_a_400_naming_it(live, tenant, world, openapi):
    with httpx.Client(base_url=live, timeout=30) as client:
        for route in api_routes():
            for method in operations(openapi, route):
                before = row_counts()
                url = fill(route, world)
                response = client.request(method, url + "?skill=%00", headers=_headers(tenant))
                assert_refused(response, 400, "invalid_query_parameter", "skill")
                nameless = client.request(method, url + "?a%00b=1", headers=_headers(tenant))
                assert_refused(nameless, 400, "invalid_query_parameter", None)
                assert row_counts() == before
    reported = httpx.get(f"{live}/api/v1/executions/nestings?chatMessageId=%00", headers=auth(tenant))
    assert_refused(reported, 400, "invalid_query_parameter", "chatMessageId")


HUGE = "9" * 5000


def test_huge_integers_in_every_integer_parameter(live, tenant, world, openapi):
    """Each integer parameter of the OpenAPI document (query or header) with 5,000 digits, and just
    over the 18 digits a parameter may have: a 400 naming it."""
    checked = 0
    with httpx.Client(base_url=live, timeout=30) as client:
        for route in api_routes():
            for method, operation in operations(openapi, route).items():
                for parameter in operation.get("parameters", []):
                    if parameter.get("schema", {}).get("type") != "integer" or parameter["in"] == "path":
                        continue
                    for value in (HUGE, "1" + "0" * 18, "²"):
                        name = parameter["name"]
                        if parameter["in"] == "query":
                            response = client.request(
                                method, fill(route, world), params={name: value}, headers=auth(tenant)
                            )
                        else:
                            headers = {**auth(tenant), name: value.encode("latin-1") if value == "²" else value}
                            response = client.request(method, fill(route, world), headers=headers)
                        assert response.status_code == 400, (route, name, response.text[:200])
                        error = response.json()["error"]
                        assert error["code"].startswith("invalid_") and error["field"] in (name, "Last-Event-ID")
                        checked += 1
    assert checked >= 3 * 8  # pageSize, pageNumber, limit, offset x 2, last_event_id, Last-Event-ID x 2


def test_huge_message_id_in_a_path_is_404(live, tenant, world):
    url = f"{live}/my/conversations/{world['conversation_id']}/messages/{HUGE}/feedback"
    assert_refused(httpx.post(url, json={"value": 1}, headers=auth(tenant)), 404, "not_found")
    url = f"{live}/my/conversations/{world['conversation_id']}/messages/{'9' * 19}/feedback"
    assert_refused(httpx.post(url, json={"value": 1}, headers=auth(tenant)), 404, "not_found")
