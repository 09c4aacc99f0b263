"""Size and type before work (api/http/request_limits.py), JSON error pages, 401 challenges.

The body limits are checked by the first layer of the ASGI application, so these tests talk to
the live uvicorn server, some over a raw socket to control what is sent and when.
"""

import asyncio
import io
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.test import RequestFactory
from prometheus_client import REGISTRY

from api.http.request_limits import MULTIPART_ROOM, RequestLimits, route_contract
from api.http.schemas import MAX_JSON_DEPTH, json_object
from config import urls
from core.errors import ApiError
from core.structured_logs import ContextFilter, JsonFormatter
from executions.models import Execution
from tests.helpers import auth

AGENT = "00000000-0000-4000-8000-000000000009"


def _raw(base_url: str, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[float, bytes]:
    """Send a request head and part of a body; the answer and how long it took to arrive."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        started, answer = time.monotonic(), b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return time.monotonic() - started, answer


def _parse(answer: bytes) -> tuple[int, dict, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _head(path: str, length: int, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def test_a_large_content_length_is_refused_before_the_body_is_sent_and_before_authentication(live):
    """300 MiB announced, 1 KiB sent, no key: the 413 comes at once, and the connection closes
    (the server read no more than what came)."""
    elapsed, answer = _raw(live, _head(f"/agents/{AGENT}/execute/stream", 300 * 1024 * 1024), b"x" * 1024)
    status, headers, body = _parse(answer)
    assert status == 413 and elapsed < 5
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert body["error"]["code"] == "request_too_large"
    assert body["error"]["message"] == "The request body is limited to 1 MiB."


def test_an_upload_over_its_limit_is_refused_before_it_is_read(live):
    length = settings.FILE_UPLOAD_MAX_BYTES + MULTIPART_ROOM + 1
    elapsed, answer = _raw(live, _head("/v1/files/", length, "multipart/form-data; boundary=x"), b"--x\r\n")
    status, _, body = _parse(answer)
    assert status == 413 and elapsed < 5
    assert body["error"] == {"code": "file_too_large", "message": "Files are limited to 50 MiB.", "field": "file"}
    _, answer = _raw(live, _head("/attachments/upload", length, "multipart/form-data; boundary=x"))
    assert _parse(answer)[2]["error"]["code"] == "file_too_large"


def test_a_json_body_exactly_at_the_limit_passes_one_byte_more_is_413(live, tenant, agent):
    url = f"{live}/agents/{agent.id}/preview-credits"
    body = b'{"inputs": {}}'
    at_limit = body + b" " * (settings.REQUEST_BODY_MAX_BYTES - len(body))
    headers = {**auth(tenant), "Content-Type": "application/json"}
    assert httpx.post(url, content=at_limit, headers=headers, timeout=30).status_code == 200
    over = httpx.post(url, content=at_limit + b" ", headers=headers, timeout=30)
    assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"


def test_a_3_mb_json_body_is_a_json_413_not_an_html_400(live, tenant, agent):
    response = httpx.post(
        f"{live}/agents/{agent.id}/execute", json={"message": "x" * 3_000_000}, headers=auth(tenant), timeout=30
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert Execution.objects.count() == 0


def test_a_chunked_body_is_cut_at_the_limit(live, tenant, agent):
    url = f"{live}/agents/{agent.id}/preview-credits"
    limit = settings.REQUEST_BODY_MAX_BYTES
    headers = {**auth(tenant), "Content-Type": "application/json"}

    def chunks(total: int):
        yield b'{"inputs": {}}'
        sent = len(b'{"inputs": {}}')
        while sent < total:
            piece = min(64 * 1024, total - sent)
            yield b" " * piece
            sent += piece

    at_limit = httpx.post(url, content=chunks(limit), headers=headers, timeout=30)
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.request.headers["transfer-encoding"] == "chunked"
    over = httpx.post(url, content=chunks(limit + 1), headers=headers, timeout=30)
    assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"


def test_a_chunked_body_over_the_limit_without_a_key_is_413_not_401(live):
    def chunks():
        for _ in range(40):
            yield b" " * (64 * 1024)

    response = httpx.post(
        f"{live}/agents/{AGENT}/execute", content=chunks(), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_the_batch_route_takes_more_than_a_json_route(live, tenant, agent):
    """Its limit comes from BATCH_MAX_ITEMS: a 2 MiB batch is read (and validated), one byte over its
    limit is refused from the Content-Length."""
    items = [{"key": f"k{i}", "message": "x" * 60_000} for i in range(35)]
    body = json.dumps({"items": items}).encode()
    assert len(body) > 2 * settings.REQUEST_BODY_MAX_BYTES
    response = httpx.post(
        f"{live}/agents/{agent.id}/execute/batch",
        content=body,
        headers={**auth(tenant), "Content-Type": "application/json", "Idempotency-Key": "big"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    response.close()
    _, answer = _raw(live, _head(f"/agents/{AGENT}/execute/batch", settings.BATCH_BODY_MAX_BYTES + 1))
    assert _parse(answer)[0] == 413


def test_route_contracts_follow_the_settings():
    batch, media = route_contract(f"/agents/{AGENT}/execute/batch")
    assert batch.max_bytes == settings.BATCH_BODY_MAX_BYTES == settings.BATCH_MAX_ITEMS * 320 * 1024
    assert media == ("application/json",)
    resume, _ = route_contract(f"/executions/{AGENT}/tool-result")
    assert resume.max_bytes == settings.TOOL_RESULT_MAX_BYTES + settings.REQUEST_BODY_MAX_BYTES
    upload, media = route_contract("/v1/files/")
    assert upload.max_bytes == settings.FILE_UPLOAD_MAX_BYTES + MULTIPART_ROOM and media == ("multipart/form-data",)
    default, media = route_contract(f"/agents/{AGENT}/preview-credits")
    assert default.max_bytes == settings.REQUEST_BODY_MAX_BYTES and media == ("application/json",)
    assert route_contract("/no/such/route")[1] is None


@pytest.mark.parametrize(
    "content_type, status",
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.api+json", 200),
    ],
)
def test_json_routes_refuse_other_media_types(live, tenant, agent, content_type, status):
    response = httpx.post(
        f"{live}/agents/{agent.id}/execute",
        content=b'{"message": "hi"}',
        headers={**auth(tenant), "Content-Type": content_type},
        timeout=60,
    )
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json()["error"]["code"] == "unsupported_media_type"
        assert Execution.objects.count() == 0


def test_a_request_without_a_body_needs_no_content_type(live, tenant, agent):
    """A cancel, an archive: no body, whatever the Content-Type (or none)."""
    response = httpx.post(f"{live}/my/conversations", json={"agent_id": str(agent.id)}, headers=auth(tenant))
    conversation_id = response.json()["data"]["id"]
    archived = httpx.post(
        f"{live}/my/conversations/{conversation_id}/archive", headers={**auth(tenant), "Content-Type": "text/plain"}
    )
    assert archived.status_code == 200, archived.text


def test_preview_credits_refuses_a_body_that_is_not_an_object(live, tenant, agent):
    response = httpx.post(f"{live}/agents/{agent.id}/preview-credits", json=[1, 2], headers=auth(tenant))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_json_nested_exactly_to_the_depth_limit_passes_one_more_is_refused():
    def nested(levels: int) -> bytes:  # the body object itself is the first level
        return ('{"k": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}").encode()

    assert json_object(nested(MAX_JSON_DEPTH))["k"]
    with pytest.raises(ApiError) as refused:
        json_object(nested(MAX_JSON_DEPTH + 1))
    assert refused.value.code == "json_too_deep"


# --- JSON error pages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/artifacts/not-a-uuid/download"),
        ("DELETE", "/users/someone/memory/not-a-uuid"),
        ("GET", "/no/such/route"),
        ("POST", "/v1/artifacts/00000000-0000-4000-8000-000000000001/download/extra"),
    ],
)
def test_unmatched_api_paths_are_json_404s(live, tenant, method, path):
    response = httpx.request(method, live + path, headers=auth(tenant))
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "The resource does not exist."}}


def test_error_pages_are_json_on_api_routes_and_html_in_the_admin(db):
    factory = RequestFactory()
    api, admin = factory.get("/executions/x"), factory.get("/admin/nothing/")
    for handler, args in (
        (urls.handler500, ()),
        (urls.handler404, (Exception(),)),
        (urls.handler400, (Exception(),)),
        (urls.handler403, (Exception(),)),
    ):
        response = handler(api, *args)
        assert response["Content-Type"] == "application/json", handler
        assert json.loads(response.content)["error"]["code"]
        assert response.status_code == handler(admin, *args).status_code
        assert handler(admin, *args)["Content-Type"].startswith("text/html")
    assert json.loads(urls.handler500(api).content)["error"]["code"] == "internal_error"


# --- 401 challenges -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", f"/executions/{AGENT}"),  # DRF, agents API
        ("GET", f"/executions/{AGENT}/events"),  # async, SSE
        ("GET", f"/executions/{AGENT}/events?token=forged"),  # async, stream token
        ("POST", f"/agents/{AGENT}/execute"),  # async, sync execute
        ("POST", f"/agents/{AGENT}/execute/stream"),
        ("POST", f"/executions/{AGENT}/tool-result"),  # async, resume
        ("GET", "/api/v1/executions"),  # the executions query API
        ("GET", f"/v1/spaces/{AGENT}/skills/executions"),  # the skills API
        ("GET", f"/v1/spaces/{AGENT}/skills/executions/{AGENT}/events"),
        ("GET", "/v1/files/"),
    ],
)
@pytest.mark.parametrize("key", [None, "wak_notakeyatall_0000000000000000000000000000"])
def test_every_401_carries_www_authenticate(live, method, path, key):
    headers = {"X-API-Key": key} if key else {}
    response = httpx.request(method, live + path, headers=headers, json={} if method == "POST" else None)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert response.json()["error"]["code"] in ("authentication_required", "invalid_api_key", "invalid_stream_token")


CORS_ORIGIN = "http://app.example.test:3000"


async def _through_the_limits_layer(path: str, content: bytes, headers: dict) -> httpx.Response:
    """A request answered by the limits layer alone: the application behind it must not be reached."""

    async def application(scope, receive, send):
        raise AssertionError("the refused request reached the application")

    transport = httpx.ASGITransport(app=RequestLimits(application))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(
    "path, content_type, size, status",
    [
        (f"/agents/{AGENT}/execute", "application/json", settings.REQUEST_BODY_MAX_BYTES + 1, 413),
        (f"/agents/{AGENT}/execute", "text/plain", 17, 415),
        ("/v1/files/", "application/json", 17, 415),
    ],
)
def test_a_refusal_carries_the_cors_headers_an_allowed_origin_needs(settings, path, content_type, size, status):
    """The 413 and 415 come before the CORS middleware runs; a browser app on an allowed origin can
    still read them (the same allow-list, the same exposed headers), another origin cannot."""
    settings.CORS_ALLOWED_ORIGINS = [CORS_ORIGIN]
    body = b"x" * size
    allowed = asyncio.run(_through_the_limits_layer(path, body, {"Content-Type": content_type, "Origin": CORS_ORIGIN}))
    assert allowed.status_code == status
    assert allowed.json()["error"]["code"] == ("request_too_large" if status == 413 else "unsupported_media_type")
    assert allowed.headers["access-control-allow-origin"] == CORS_ORIGIN
    exposed = [h.strip() for h in allowed.headers["access-control-expose-headers"].split(",")]
    assert exposed == list(settings.CORS_EXPOSE_HEADERS)
    assert "access-control-allow-credentials" not in allowed.headers
    assert allowed.headers["vary"].lower() == "origin"
    assert allowed.headers["connection"] == "close" and allowed.headers["content-type"] == "application/json"
    other = asyncio.run(
        _through_the_limits_layer(path, body, {"Content-Type": content_type, "Origin": "http://evil.example.test"})
    )
    assert other.status_code == status and "access-control-allow-origin" not in other.headers
    settings.CORS_ALLOWED_ORIGINS = []
    assert (
        "access-control-allow-origin"
        not in asyncio.run(
            _through_the_limits_layer(path, body, {"Content-Type": content_type, "Origin": CORS_ORIGIN})
        ).headers
    )


def test_a_refusal_has_its_access_line_and_its_count(settings):
    """Refused before Django's chain, so before the access-log middleware: the layer logs it itself."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    access = logging.getLogger("api.access")
    route = "agents/<str:agent_id>/execute"
    before = REGISTRY.get_sample_value(
        "skillrun_http_requests_total", {"method": "POST", "route": route, "status": "413"}
    )
    access.addHandler(handler)
    try:
        body = b"x" * (settings.REQUEST_BODY_MAX_BYTES + 1)
        headers = {"Content-Type": "application/json", "X-Request-Id": "big-1"}
        refused = asyncio.run(_through_the_limits_layer(f"/agents/{AGENT}/execute", body, headers))
    finally:
        access.removeHandler(handler)
    assert refused.status_code == 413 and refused.headers["X-Request-Id"] == "big-1"
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["method"] == "POST" and line["route"] == route and line["status"] == 413
    assert line["request_id"] == "big-1" and line["duration_ms"] >= 0
    after = REGISTRY.get_sample_value(
        "skillrun_http_requests_total", {"method": "POST", "route": route, "status": "413"}
    )
    assert after == (before or 0) + 1


# --- multipart: chunked uploads, malformed bodies ------------------------------------------------------


def _multipart(filename: str, content: bytes, boundary: str = "sr-boundary") -> tuple[bytes, str]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: text/plain\r\n\r\n"
    ).encode()
    return body + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("route", ["/v1/files/", "/attachments/upload"])
def test_a_chunked_upload_within_the_limit_is_stored(live, tenant, route):
    """No Content-Length (Transfer-Encoding: chunked): the body is read whole within the route's
    limit, then parsed; it had been answered `file_required` after the whole body was read."""
    content = b"chunked notes\n" * 5000
    body, content_type = _multipart("notes.txt", content)

    def chunks():
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = httpx.post(
        f"{live}{route}", content=chunks(), headers={**auth(tenant), "Content-Type": content_type}, timeout=30
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 201, response.content
    assert response.json()["data"]["size_bytes"] == len(content)


@pytest.mark.parametrize("route", ["/v1/files/", "/attachments/upload"])
@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b"--x\r\nnot a part\r\n--x--\r\n"),  # no boundary
        ("multipart/form-data; boundary=", b"--\r\n"),  # an empty one
        ("multipart/form-data; charset=utf-8", b"--x\r\n"),  # parameters, but no boundary
    ],
)
def test_a_malformed_multipart_body_is_a_400_invalid_multipart(live, tenant, route, content_type, body):
    response = httpx.post(
        f"{live}{route}", content=body, headers={**auth(tenant), "Content-Type": content_type}, timeout=30
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_multipart"


def test_a_malformed_json_body_is_still_invalid_json(live, tenant, agent):
    response = httpx.post(
        f"{live}/agents/{agent.id}/execute",
        content=b'{"message": ',
        headers={**auth(tenant), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
