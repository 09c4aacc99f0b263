"""Issue 12: the docs pages from packaged assets, a schema for every response and every event type,
CORS for browser apps (CORS_ALLOWED_ORIGINS), `Prefer: respond-async`, and 204 for an
EventSource that reconnects after the end of an execution."""

import re
import subprocess
import time

import httpx
import pytest
from django.test import Client

from executions.models import ExecutionEvent
from ops import processes
from tests.conftest import REPO_ROOT, _free_port, _stop
from tests.factories import SkillFactory
from tests.helpers import (
    ANSWERING_SKILL_MANIFEST,
    auth,
    data_of,
    event_validator,
    execute,
    stream,
    stream_agent,
    wait_for,
)

DOCUMENT = Client(HTTP_HOST="localhost").get("/api/schema/", HTTP_ACCEPT="application/json").json()
EVENT_VALIDATOR = event_validator(DOCUMENT)
ALLOWED_ORIGIN = "http://app.example.test:3000"
OTHER_ORIGIN = "http://evil.example.test"

# --- docs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_from_the_apis_own_static_files(live, page):
    response = httpx.get(f"{live}{page}", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/static/"), f"{page} loads {asset} from elsewhere"
        assert httpx.get(f"{live}{asset}", timeout=10).status_code == 200, asset
    assert "/api/schema/" in response.text  # what the page renders


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_every_success_response_of_every_operation_has_a_schema():
    """A generated client gets a typed result for every answer (a 204 has no body)."""
    for path, path_item in DOCUMENT["paths"].items():
        for method, operation in path_item.items():
            for status, response in operation["responses"].items():
                if status[0] != "2" or status == "204":
                    continue
                assert response.get("content"), (method, path, status)
                for media_type, content in response["content"].items():
                    schema = _resolve(content.get("schema") or {})
                    assert schema.get("type") or schema.get("oneOf") or schema.get("allOf"), (method, path, media_type)


def test_the_sse_operations_document_each_event_type_and_the_frames():
    schemas = DOCUMENT["components"]["schemas"]
    event = schemas["ExecutionEvent"]
    assert event["discriminator"]["propertyName"] == "type"
    documented = set(event["discriminator"]["mapping"])
    assert {"start", "text", "final", "error", "suspended", "batch_progress", "heartbeat"} <= documented
    for type_, ref in event["discriminator"]["mapping"].items():
        assert _resolve({"$ref": ref})["properties"]["type"]["enum"] == [type_]
    assert "`id: <seq>`" in schemas["ExecutionEventFrame"]["description"]
    sse = [
        (path, method)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        for response in operation["responses"].values()
        if "text/event-stream" in response.get("content", {})
    ]
    assert len(sse) == 7, sse  # the streams, the batch, the three resumes, the two events routes


def _check_events(execution_ids) -> set:
    seen = set()
    for event in ExecutionEvent.objects.filter(execution_id__in=execution_ids):
        EVENT_VALIDATOR.validate(event.data)
        seen.add(event.type)
    return seen


@pytest.mark.django_db(transaction=True)
def test_every_event_the_runtime_writes_matches_its_documented_schema(api, tenant, workflow_agent, make_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "tools": ["calculator"],
            "accepts_client_tools": True,
            "model": {
                "provider": "builtin",
                "script": [
                    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                    {"text": "Where?", "tool_calls": [{"name": "get_location", "arguments": {}}]},
                    {"text": "four, at home"},
                ],
            },
        },
        {"id": "review", "type": "human_gate", "prompt": "Send?"},
    )
    client_tools = [{"name": "get_location", "description": "Where", "parameters": {"type": "object"}}]
    body = {"message": "2+2?", "client_tools": client_tools}
    first = stream(api, "POST", f"/agents/{agent.id}/execute/stream", auth(tenant), body)
    execution_id = first[0].data["execution_id"]
    call = next(e.data for e in first if e.data["type"] == "tool_call_awaiting_client")
    answer = {"tool_call_id": call["tool_call_id"], "outcome": "success", "result": {"city": "Paris"}}
    assert api.post(f"/executions/{execution_id}/tool-result", headers=auth(tenant), json=answer).status_code == 200
    wait_for(lambda: ExecutionEvent.objects.filter(type="suspended").count() == 2)
    decision = {"decision": "approve", "comment": ""}
    assert api.post(f"/executions/{execution_id}/approval", headers=auth(tenant), json=decision).status_code == 200
    wait_for(lambda: ExecutionEvent.objects.filter(type="final").exists())
    simple = make_agent(tenant.workspace, reply="ok", fail_on="FAIL")
    items = [{"key": "a", "message": "fine"}, {"key": "b", "message": "FAIL"}]
    batch = stream(api, "POST", f"/agents/{simple.id}/execute/batch", auth(tenant), {"items": items})
    assert batch[-1].data["type"] == "batch_completed"
    seen = _check_events(ExecutionEvent.objects.values("execution_id"))
    assert {
        "start",
        "node_start",
        "tool_call",
        "tool_result",
        "tool_call_awaiting_client",
        "suspended",
        "resumed",
        "text",
        "node_complete",
        "final",
        "error",
        "batch_started",
        "batch_progress",
        "batch_completed",
    } <= seen


# --- Prefer: respond-async -----------------------------------------------------------------------


@pytest.mark.parametrize("prefer", ["respond-async", "wait=100, Respond-Async"])
def test_respond_async_answers_202_at_once_with_where_to_poll(live, tenant, streaming_agent, prefer):
    started = time.monotonic()
    response = execute(live, streaming_agent, tenant, headers={"Prefer": prefer})
    assert time.monotonic() - started < 1.0  # the agent streams for about 1 s
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    data = response.json()["data"]
    assert set(data) == {"execution_id", "status"} and data["status"] == "queued"
    assert response.headers["Location"] == f"/executions/{data['execution_id']}"
    polled = httpx.get(f"{live}{response.headers['Location']}", headers=auth(tenant), timeout=10)
    assert data_of(polled)["id"] == data["execution_id"]
    events = stream(live, "GET", f"{response.headers['Location']}/events", auth(tenant))
    assert events[-1].data["type"] == "final"


def test_without_respond_async_the_execute_still_waits(live, tenant, agent):
    response = execute(live, agent, tenant, headers={"Prefer": "return=minimal"})
    assert response.status_code == 200 and response.json()["data"]["status"] == "completed"
    assert "Preference-Applied" not in response.headers and "Location" not in response.headers


# --- 204 after the end ---------------------------------------------------------------------------


def _get_events(live, path, key_headers, last_event_id=None, **params):
    headers = {**key_headers, **({"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {})}
    return httpx.get(f"{live}{path}", headers=headers, params=params, timeout=15)


def _assert_ended_stream_contract(live, path, key_headers, events):
    last = int(events[-1].id)
    for after in (last, last + 1, 10**17):
        response = _get_events(live, path, key_headers, after)
        assert response.status_code == 204, (after, response.text)
        assert response.content == b"" and "content-type" not in response.headers
    as_event_source = _get_events(live, path, key_headers, lastEventId=last)  # EventSource's query form
    assert as_event_source.status_code == 204
    before_the_end = _get_events(live, path, key_headers, last - 1)
    assert before_the_end.status_code == 200
    assert before_the_end.text == f"id: {last}\ndata: {events[-1].raw}\n\n"
    replay = _get_events(live, path, key_headers)  # without Last-Event-ID: the whole log again
    assert replay.status_code == 200 and replay.text.count("\ndata: ") == len(events)


def _raw_events(live, path, key_headers):
    """The events of an ended stream, each with its data line as sent (`raw`)."""
    events = stream(live, "GET", path, key_headers)
    with httpx.stream("GET", f"{live}{path}", headers=key_headers, timeout=15) as response:
        frames = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    for event, raw in zip(events, frames):
        event.raw = raw
    return events


def test_an_ended_executions_events_answer_204_past_the_end(live, tenant, agent):
    execution_id = stream_agent(live, agent, tenant)[0].data["execution_id"]
    path = f"/executions/{execution_id}/events"
    _assert_ended_stream_contract(live, path, auth(tenant), _raw_events(live, path, auth(tenant)))


def test_a_failed_executions_events_answer_204_past_the_error(live, tenant, make_agent):
    failing = make_agent(tenant.workspace, reply="x", fail_on="FAIL")
    events = stream_agent(live, failing, tenant, message="FAIL")
    assert events[-1].data["type"] == "error"
    path = f"/executions/{events[0].data['execution_id']}/events"
    _assert_ended_stream_contract(live, path, auth(tenant), _raw_events(live, path, auth(tenant)))


def test_a_skill_executions_events_answer_204_past_the_end(live, tenant):
    SkillFactory(workspace=tenant.workspace, slug="report", manifest=ANSWERING_SKILL_MANIFEST)
    space = f"workspace:{tenant.workspace.id}"
    started = httpx.post(
        f"{live}/v1/spaces/{space}/skills/report/executions",
        json={"inputs": {"topic": "x"}},
        headers=auth(tenant, "workspace"),
        timeout=10,
    )
    path = f"/v1/spaces/{space}/skills/executions/{data_of(started)['id']}/events"
    events = _raw_events(live, path, auth(tenant, "workspace"))
    assert events[-1].data["type"] == "final"
    _assert_ended_stream_contract(live, path, auth(tenant, "workspace"), events)


def test_a_suspended_execution_is_not_over(live, tenant, workflow_agent):
    """At a suspension the stream ends, but the execution goes on: a reconnection waits for more."""
    agent = workflow_agent({"id": "review", "type": "human_gate", "prompt": "ok?"})
    events = stream_agent(live, agent, tenant)
    assert events[-1].data["type"] == "suspended"
    path = f"{live}/executions/{events[0].data['execution_id']}/events"
    headers = {**auth(tenant), "Last-Event-ID": events[-1].id}
    with httpx.stream("GET", path, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")


# --- CORS ----------------------------------------------------------------------------------------

REQUEST_HEADERS = "authorization, content-type, idempotency-key, last-event-id, prefer, x-api-key, x-workspace-id"
EXPOSED = {"x-credits-remaining", "x-app-version", "x-workspace-id", "location"}


def preflight(base, path, origin, method="POST"):
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": REQUEST_HEADERS,
    }
    return httpx.options(f"{base}{path}", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def cors_server(services_env, tmp_path_factory):
    """A second uvicorn of config.asgi, started with CORS_ALLOWED_ORIGINS (the suite's has none)."""
    port = _free_port()
    command, process_env = processes.api("127.0.0.1", port)
    env = {**services_env, **process_env, "CORS_ALLOWED_ORIGINS": f" {ALLOWED_ORIGIN} ,http://other.example.test"}
    log = open(tmp_path_factory.mktemp("cors-api") / "api.log", "w")
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base), timeout=60)
        yield base
    finally:
        _stop(process)


def _answers(base) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/agents/agent:00000000-0000-4000-8000-000000000001/execute", "POST"),
        ("/attachments/upload", "POST"),  # a multipart route: the body layer lets a bodiless OPTIONS pass
        ("/executions/execution:00000000-0000-4000-8000-000000000001/events", "GET"),
    ],
)
def test_a_preflight_from_an_allowed_origin_is_answered_without_a_key(cors_server, path, method):
    response = preflight(cors_server, path, ALLOWED_ORIGIN, method)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in REQUEST_HEADERS.split(",")} <= allowed
    assert method in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers


def test_another_origin_gets_no_cors_headers(live, cors_server, tenant, agent):
    response = preflight(cors_server, f"/agents/{agent.id}/execute", OTHER_ORIGIN)
    assert "access-control-allow-origin" not in response.headers
    actual = execute(cors_server, agent, tenant, headers={"Origin": OTHER_ORIGIN})
    assert actual.status_code == 200 and "access-control-allow-origin" not in actual.headers
    # and the suite's server, started without CORS_ALLOWED_ORIGINS, allows no origin at all
    assert "access-control-allow-origin" not in preflight(live, f"/agents/{agent.id}/execute", ALLOWED_ORIGIN).headers


def test_an_actual_request_exposes_the_apis_headers(live, cors_server, tenant, agent):
    response = execute(cors_server, agent, tenant, headers={"Origin": ALLOWED_ORIGIN, "Prefer": "respond-async"})
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert EXPOSED <= exposed
    events_path = f"{response.headers['Location']}/events"
    with httpx.stream(
        "GET", f"{cors_server}{events_path}", headers={**auth(tenant), "Origin": ALLOWED_ORIGIN}, timeout=15
    ) as stream_response:  # what an EventSource on that origin opens
        assert stream_response.status_code == 200
        assert stream_response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        stream_response.read()
    unauthenticated = httpx.get(f"{cors_server}{response.headers['Location']}", headers={"Origin": ALLOWED_ORIGIN})
    assert unauthenticated.status_code == 401  # an error a browser app can read too
    assert unauthenticated.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_the_admin_is_not_shared_with_other_origins(cors_server):
    response = httpx.get(f"{cors_server}/admin/login/", headers={"Origin": ALLOWED_ORIGIN}, timeout=10)
    assert "access-control-allow-origin" not in response.headers
