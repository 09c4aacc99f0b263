"""The `fal` media provider against a local fake of Fal.ai's queue API (real HTTP, answering the
documented submit / status / result responses, https://docs.fal.ai "Queue" and "Webhooks"), and
POST /inbound/fal with webhooks signed by a real ED25519 key that the fake's JWKS serves."""

import base64
import hashlib
import json
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone

from api.inbound import fal_signature
from executions.media_requests import check_deliver_media_webhook
from executions.models import Execution, ExecutionEvent, ExecutionState, MediaRequest
from executions.services import resume_timed_out
from tests.helpers import auth, execute, execution_uuid, post
from tests.test_bad_input import BAD_JSON_BODIES
from workers import nodes
from workers.media import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)

FAL_KEY = "fal-test-key-0123456789"
MODEL = "fal-ai/flux/dev"
PNG = png_bytes(32, 24, b"\x10\x80\xf0")


class FakeFal:
    """Fal's queue for one test: submitted requests, which are done, and what each call received."""

    def __init__(self):
        self.key = Ed25519PrivateKey.generate()
        self.jwks_keys = [self.key]
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.status_outages = 0  # the next status calls answered 503
        self.submits: list[dict] = []
        self.calls: list[tuple[str, str, str]] = []  # (method, path, Authorization)
        self.media = PNG
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict:
        keys = []
        for key in self.jwks_keys:
            raw = key.public_key().public_bytes_raw()
            keys.append({"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()})
        return {"keys": keys}

    def result(self, request_id: str) -> dict:
        """The model's output, as the response_url and the webhook's `payload` give it."""
        return {
            "images": [
                {
                    "url": f"{self.base}/files/{request_id}.png",
                    "content_type": "image/png",
                    "file_name": "fox.png",
                    "file_size": len(self.media),
                    "width": 32,
                    "height": 24,
                }
            ],
            "timings": {"inference": 0.8},
            "seed": 196619188014358660,
            "has_nsfw_concepts": [False],
            "prompt": "a red fox",
        }

    def handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlparse(self.path).path
                fake.calls.append(("GET", path, self.headers.get("Authorization", "")))
                if path == "/.well-known/jwks.json":
                    return self.answer(200, fake.jwks())
                if path.startswith("/files/"):
                    return self.answer(200, fake.media, "image/png")
                if self.headers.get("Authorization") != f"Key {FAL_KEY}":
                    return self.answer(401, {"detail": "Unauthorized"})
                parts = path.strip("/").split("/")
                request_id = parts[parts.index("requests") + 1]
                if path.endswith("/status") and fake.status_outages:
                    fake.status_outages -= 1
                    return self.answer(503, {"detail": "Service Unavailable"})
                if path.endswith("/status"):
                    status = "COMPLETED" if request_id in fake.done | fake.failed else "IN_QUEUE"
                    body = {"status": status, "request_id": request_id, "response_url": f"{fake.base}/x"}
                    if status == "IN_QUEUE":
                        body["queue_position"] = 0
                    return self.answer(200, body)
                if request_id in fake.failed:
                    return self.answer(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]})
                return self.answer(200, fake.result(request_id))

            def do_POST(self):
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.calls.append(("POST", url.path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Key {FAL_KEY}":
                    return self.answer(401, {"detail": "Unauthorized"})
                request_id = str(uuid.uuid4())
                fake.submits.append({"path": url.path, "query": parse_qs(url.query), "body": body, "id": request_id})
                base = f"{fake.base}{url.path}/requests/{request_id}"
                return self.answer(
                    200,
                    {
                        "request_id": request_id,
                        "gateway_request_id": request_id,
                        "response_url": base,
                        "status_url": f"{base}/status",
                        "cancel_url": f"{base}/cancel",
                    },
                )

        return Handler

    def webhook(self, request_id: str, status: str = "OK") -> bytes:
        """The documented webhook body for a finished request."""
        body = {"request_id": request_id, "gateway_request_id": request_id, "status": status}
        if status == "OK":
            body["payload"] = self.result(request_id)
        else:
            body["error"] = "Invalid status code: 422"
            body["payload"] = {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]}
        return json.dumps(body).encode()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def signed_headers(key, request_id: str, body: bytes, timestamp: int | None = None, user_id="fal-user-42") -> dict:
    """Fal's signature: ED25519 over request id, user id, timestamp and the body's SHA-256 hex, one per line."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    message = "\n".join([request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest()]).encode()
    return {
        "Content-Type": "application/json",
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


@pytest.fixture
def fal(settings):
    fake = FakeFal()
    settings.FAL_KEY = FAL_KEY
    settings.FAL_QUEUE_URL = fake.base
    settings.FAL_JWKS_URL = f"{fake.base}/.well-known/jwks.json"
    settings.FAL_POLL_INTERVAL_SECONDS = 30
    settings.PUBLIC_BASE_URL = "http://testserver"
    fal_signature.clear_cache()
    yield fake
    fal_signature.clear_cache()
    fake.close()


@pytest.fixture
def fal_agent(workflow_agent):
    def make(**options):
        return workflow_agent(
            {
                "id": "image",
                "type": "media_generation",
                "provider": "fal",
                "model": MODEL,
                "prompt": "a red fox, {{message}}",
                "width": 32,
                "height": 24,
                "arguments": {"num_inference_steps": 4},
                **options,
            }
        )

    return make


def start(api, agent, tenant) -> Execution:
    response = execute(api, agent, tenant, "at dawn", headers={"Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    return Execution.objects.get(id=execution_uuid(response.json()["data"]["execution_id"]))


def event_types(execution) -> list[str]:
    return list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("type", flat=True))


def send_webhook(api, body: bytes, headers: dict):
    return api.post("/inbound/fal", content=body, headers=headers)


def test_the_node_submits_waits_without_a_worker_and_the_signed_webhook_completes_it(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    execution.refresh_from_db()
    # submitted to the queue with our webhook and the key; then suspended, no `suspended` event
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT
    assert api.runtime.outcomes == ["suspended"]
    [submit] = fal.submits
    assert submit["path"] == f"/{MODEL}"
    assert submit["query"] == {"fal_webhook": ["http://testserver/inbound/fal"]}
    assert submit["body"] == {
        "num_inference_steps": 4,
        "prompt": "a red fox, at dawn",
        "image_size": {"width": 32, "height": 24},
    }
    assert ("POST", f"/{MODEL}", f"Key {FAL_KEY}") in fal.calls
    assert event_types(execution) == ["start", "node_start", "media_gen_submitted"]
    submitted = ExecutionEvent.objects.get(execution=execution, type="media_gen_submitted").data
    assert submitted["job_id"] == submit["id"] and submitted["provider"] == "fal"
    assert MediaRequest.objects.get(request_id=submit["id"]).execution_id == execution.id

    fal.done.add(submit["id"])
    body = fal.webhook(submit["id"])
    response = send_webhook(api, body, signed_headers(fal.key, submit["id"], body))
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"request_id": submit["id"], "outcome": "recorded"}
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED
    assert event_types(execution)[3:] == ["resumed", "media_gen_complete", "node_complete", "final"]
    complete = ExecutionEvent.objects.get(execution=execution, type="media_gen_complete").data
    assert complete["content_type"] == "image/png" and complete["size_bytes"] == len(PNG)
    download = api.get(complete["url"])
    assert download.status_code == 200 and download.content == PNG
    assert execution.checkpoint["node_outputs"]["image"]["url"] == complete["url"]
    # nothing was polled: the webhook brought the result
    assert not [call for call in fal.calls if call[1].endswith("/status")]

    # Fal retries a webhook it thinks failed: the second one does nothing
    again = send_webhook(api, body, signed_headers(fal.key, submit["id"], body))
    assert again.status_code == 200 and again.json()["data"]["outcome"] == "duplicate"
    assert event_types(execution).count("media_gen_complete") == 1
    assert api.runtime.outcomes == ["suspended", "completed"]


def test_tampered_old_unknown_and_unsigned_webhooks_are_refused(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    request_id = fal.submits[0]["id"]
    body = fal.webhook(request_id)
    tampered = body.replace(b"fox.png", b"evil.png")
    cases = {
        "tampered body": (tampered, signed_headers(fal.key, request_id, body)),
        "timestamp 301 s old": (body, signed_headers(fal.key, request_id, body, int(time.time()) - 301)),
        "timestamp 301 s ahead": (body, signed_headers(fal.key, request_id, body, int(time.time()) + 301)),
        "unknown key": (body, signed_headers(Ed25519PrivateKey.generate(), request_id, body)),
        "other request id in the header": (
            body,
            signed_headers(fal.key, "another-id", body) | {"X-Fal-Webhook-Request-Id": request_id},
        ),
        "no signature": (body, {"Content-Type": "application/json"}),
        "signature not hex": (body, signed_headers(fal.key, request_id, body) | {"X-Fal-Webhook-Signature": "zz"}),
    }
    for name, (sent, headers) in cases.items():
        response = send_webhook(api, sent, headers)
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "invalid_signature", name
    execution.refresh_from_db()
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT
    assert MediaRequest.objects.get(request_id=request_id).received_at is None
    # within the tolerance it is accepted
    headers = signed_headers(fal.key, request_id, body, int(time.time()) - 290)
    assert send_webhook(api, body, headers).json()["data"]["outcome"] == "recorded"
    # the keys were fetched once (cached), plus one early refetch for the unknown signatures
    jwks_fetches = [call for call in fal.calls if call[1] == "/.well-known/jwks.json"]
    assert 1 <= len(jwks_fetches) <= 2


@pytest.mark.parametrize(
    "timestamp", ["9" * 309, "9" * 400, "-" + "9" * 309, "9" * 19, "1e400", "+1700000000", "1_700_000_000"]
)
def test_a_timestamp_that_is_not_plain_unix_seconds_is_a_401(api, fal, timestamp):
    """Checked before any key is fetched: no key needed to be refused, and never a 500 (a number of
    309 digits overflowed the comparison with the clock)."""
    body = fal.webhook("req-overflow")
    headers = signed_headers(fal.key, "req-overflow", body) | {"X-Fal-Webhook-Timestamp": timestamp}
    response = send_webhook(api, body, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not [call for call in fal.calls if call[1] == "/.well-known/jwks.json"]


def test_a_rotated_key_is_fetched_again(api, tenant, fal, fal_agent, monkeypatch):
    start(api, fal_agent(), tenant)
    request_id = fal.submits[0]["id"]
    body = fal.webhook(request_id, "ERROR")
    assert fal_signature.signing_keys()  # cached
    new_key = Ed25519PrivateKey.generate()
    fal.jwks_keys = [new_key]
    monkeypatch.setattr(fal_signature, "REFETCH_MIN_SECONDS", 0)
    response = send_webhook(api, body, signed_headers(new_key, request_id, body))
    assert response.status_code == 200 and response.json()["data"]["outcome"] == "recorded"


def test_unreachable_keys_are_a_503_that_fal_retries(api, settings, fal):
    settings.FAL_JWKS_URL = "http://127.0.0.1:9/jwks.json"
    body = fal.webhook("r-1")
    response = send_webhook(api, body, signed_headers(fal.key, "r-1", body))
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"


def test_a_webhook_for_a_job_that_is_not_ours_is_answered_and_ignored(api, fal):
    body = fal.webhook("0f0f0f0f-not-ours")
    response = send_webhook(api, body, signed_headers(fal.key, "0f0f0f0f-not-ours", body))
    assert response.status_code == 200 and response.json()["data"]["outcome"] == "unknown_request"
    assert not MediaRequest.objects.exists()


def test_a_signed_body_that_is_not_a_webhook_is_a_400(api, fal):
    body = json.dumps({"request_id": "r-2", "status": "MAYBE"}).encode()
    response = send_webhook(api, body, signed_headers(fal.key, "r-2", body))
    assert response.status_code == 400


def test_polling_completes_the_node_when_no_webhook_comes(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    request_id = fal.submits[0]["id"]
    execution.refresh_from_db()
    assert execution.resume_deadline is not None  # FAL_POLL_INTERVAL_SECONDS from now: the reaper polls then
    # the reaper's sweep once the interval passed: the job is still queued, the node waits again
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT and execution.resume_deadline is not None
    status_calls = [call for call in fal.calls if call[1].endswith(f"{request_id}/status")]
    assert status_calls == [("GET", f"/{MODEL}/requests/{request_id}/status", f"Key {FAL_KEY}")]
    # done now, and still no webhook: the next sweep's poll finds it
    fal.done.add(request_id)
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED
    assert api.runtime.outcomes == ["suspended", "suspended", "completed"]
    assert event_types(execution).count("media_gen_complete") == 1
    assert MediaRequest.objects.get(request_id=request_id).received_via == "poll"
    # a webhook that comes late changes nothing
    body = fal.webhook(request_id)
    late = send_webhook(api, body, signed_headers(fal.key, request_id, body))
    assert late.json()["data"]["outcome"] == "duplicate"
    assert event_types(execution).count("final") == 1


def test_a_poll_that_finds_fal_unavailable_waits_for_the_next_one(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    fal.done.add(fal.submits[0]["id"])
    fal.status_outages = 1
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED


def test_without_a_public_base_url_the_node_only_polls(api, tenant, settings, fal, fal_agent):
    settings.PUBLIC_BASE_URL = ""
    execution = start(api, fal_agent(), tenant)
    assert fal.submits[0]["query"] == {}
    fal.done.add(fal.submits[0]["id"])
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED


def test_a_webhook_that_comes_before_the_node_suspended_resumes_it(api, tenant, fal, fal_agent, monkeypatch):
    """Fal answers between the node's look for a result and the commit of its suspension: the
    webhook finds the execution still running and leaves it; the worker, once suspended, finds the
    result and resumes itself."""
    look = nodes.media_request_result
    outcomes = []

    def look_then_webhook(**kwargs):
        found = look(**kwargs)
        if not outcomes:
            fal.done.add(kwargs["request_id"])
            result = json.loads(fal.webhook(kwargs["request_id"]))
            outcomes.append(check_deliver_media_webhook(provider="fal", request_id=kwargs["request_id"], result=result))
        return found

    monkeypatch.setattr(nodes, "media_request_result", look_then_webhook)
    execution = start(api, fal_agent(), tenant)
    execution.refresh_from_db()
    assert outcomes == ["recorded"]
    assert execution.state == ExecutionState.COMPLETED
    assert api.runtime.outcomes == ["suspended", "completed"]
    assert event_types(execution).count("media_gen_complete") == 1


def test_an_error_result_fails_the_node(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    request_id = fal.submits[0]["id"]
    body = fal.webhook(request_id, "ERROR")
    assert send_webhook(api, body, signed_headers(fal.key, request_id, body)).status_code == 200
    execution.refresh_from_db()
    assert execution.state == ExecutionState.FAILED
    assert execution.error["code"] == "media_gen_failed"
    assert "Invalid status code: 422" in execution.error["message"]


def test_an_error_found_by_polling_fails_the_node(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    fal.failed.add(fal.submits[0]["id"])
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.FAILED and execution.error["code"] == "media_gen_failed"


def test_the_node_times_out_when_fal_never_finishes(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(timeout_seconds=1), tenant)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT
    # the session's live reaper (housekeeping, on this database) must not resume it first: its poll
    # is not due before time_out() below says so
    Execution.objects.filter(id=execution.id).update(resume_deadline=timezone.now() + timedelta(hours=1))
    time.sleep(1.1)  # past the node's 1 s
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.FAILED and execution.error["code"] == "media_gen_timeout"


def test_a_client_cannot_post_the_result_as_an_external_event(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    response = post(
        api,
        f"/executions/{execution.public_id}/external-event",
        {"event": "fal", "payload": {"images": [{"url": "http://evil.example/x.png"}]}},
        auth(tenant),
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "execution_waits_for_media"
    execution.refresh_from_db()
    assert execution.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT


def test_a_waiting_node_can_be_cancelled(api, tenant, fal, fal_agent):
    execution = start(api, fal_agent(), tenant)
    response = post(api, f"/executions/{execution.public_id}/cancel", {}, auth(tenant))
    assert response.status_code == 200
    body = fal.webhook(fal.submits[0]["id"])
    send_webhook(api, body, signed_headers(fal.key, fal.submits[0]["id"], body))
    execution.refresh_from_db()
    assert execution.state == ExecutionState.CANCELLED


def test_provider_failures_fail_the_node_with_their_reason(api, tenant, settings, fal, fal_agent):
    settings.FAL_KEY = ""
    execution = start(api, fal_agent(), tenant)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.FAILED and execution.error["code"] == "provider_auth_error"
    assert not fal.submits

    settings.FAL_KEY = "wrong-key"
    execution = start(api, fal_agent(), tenant)
    execution.refresh_from_db()
    assert execution.error["code"] == "provider_auth_error" and "wrong-key" not in execution.error["message"]

    settings.FAL_KEY = FAL_KEY
    execution = start(api, fal_agent(model=""), tenant)
    execution.refresh_from_db()
    assert execution.error["code"] == "invalid_request"


def test_media_larger_than_the_limit_fails_the_node(api, tenant, settings, fal, fal_agent):
    settings.FAL_MEDIA_MAX_BYTES = len(PNG)
    execution = start(api, fal_agent(), tenant)
    fal.done.add(fal.submits[0]["id"])
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED  # exactly the limit passes

    settings.FAL_MEDIA_MAX_BYTES = len(PNG) - 1
    execution = start(api, fal_agent(), tenant)
    fal.done.add(fal.submits[1]["id"])
    api.runtime.time_out(execution.id)
    execution.refresh_from_db()
    assert execution.state == ExecutionState.FAILED and execution.error["code"] == "provider_error"
    assert "larger than" in execution.error["message"]
    assert resume_timed_out() == []


def test_bad_json_from_fal_is_a_400_with_its_code(api, fal):
    for name, body, code, _ in BAD_JSON_BODIES:
        content = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        response = send_webhook(api, content, signed_headers(fal.key, "r-3", content))
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == code, name
