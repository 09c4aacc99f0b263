"""Outbound webhooks, the delivery: events written with their transition (outbox), signed per
Standard Webhooks (checked with the reference `standardwebhooks` verifier), retried with backoff
against a real local HTTP server with one stable webhook-id, never lost across a worker's death,
refused on non-public addresses (SSRF), endpoints disabled after repeated failure, redelivered
from the admin."""

import http.server
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpcore
import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from executions import services
from executions.models import Execution, ExecutionState
from executions.purge import purge_execution
from tests.factories import ExecutionFactory
from tests.helpers import auth, data_of, execute, execution_uuid, post, wait_for
from webhooks import delivery, transport
from webhooks.delivery import DELIVER_TASK, retry_delay, sweep_due
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

ALL_EVENTS = ["execution.completed", "execution.failed", "execution.cancelled", "execution.suspended"]


@dataclass
class Received:
    headers: dict
    body: str
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: answers each POST with the next status of `script` (then
    `default`); a status of None holds the request until `release` is set (then drops it)."""

    script: list = field(default_factory=list)
    default: int = 200
    requests: list = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks?token=abc"

    def answer(self, handler):
        length = int(handler.headers.get("content-length", 0))
        body = handler.rfile.read(length).decode()
        self.requests.append(Received({k.lower(): v for k, v in handler.headers.items()}, body, time.monotonic()))
        status = self.script.pop(0) if self.script else self.default
        if status is None:
            self.held.set()
            self.release.wait(60)
            handler.close_connection = True
            return
        handler.send_response(status)
        handler.send_header("content-type", "text/plain")
        handler.end_headers()
        handler.wfile.write(f"answer {status} ".encode() * 100)


@pytest.fixture
def receiver():
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            state.answer(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def register(api, tenant, url, events=ALL_EVENTS) -> dict:
    return data_of(post(api, "/webhooks", {"url": url, "events": events}, auth(tenant, "workspace")))


def run_webhook_tasks(inline) -> int:
    """Run the delivery tasks published so far (the inline runtime records them), as a worker would."""
    ran = 0
    while inline.other_tasks:
        name, args = inline.other_tasks.pop(0)
        assert name == DELIVER_TASK
        delivery.do_deliver(args[0])
        ran += 1
    return ran


def deliver_until_done(inline, timeout: float = 15) -> None:
    """Run attempts and beat's sweep until no delivery is pending."""
    deadline = time.monotonic() + timeout
    while WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).exists():
        assert time.monotonic() < deadline, list(WebhookDelivery.objects.values("status", "attempts", "last_error"))
        run_webhook_tasks(inline)
        sweep_due()
        time.sleep(0.02)


def verified(received: Received, secret: str) -> dict:
    """The payload, verified by the Standard Webhooks reference implementation (raises otherwise)."""
    return Webhook(secret).verify(received.body, received.headers)


# --- the events and their signatures ---------------------------------------------------------------


def test_a_completed_execution_is_delivered_signed(api, tenant, agent, receiver):
    endpoint = register(api, tenant, receiver.url)
    started = data_of(execute(api, agent, tenant, "hello"))
    assert started["status"] == "completed"
    assert run_webhook_tasks(api.runtime) == 1  # published on commit

    (received,) = receiver.requests
    event = verified(received, endpoint["secret"])
    assert event["type"] == "execution.completed"
    assert abs(datetime.fromisoformat(event["timestamp"]).timestamp() - time.time()) < 60
    data = event["data"]
    assert data["execution_id"] == started["execution_id"] and data["status"] == "completed"
    assert data["source"] == "api" and data["responder"]["id"] == f"agent:{agent.id}"
    assert data["outputs"]["text"] == started["output"]["text"]
    assert data["usage"]["output_tokens"] > 0
    assert "inputs" not in data and endpoint["secret"] not in received.body
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"].startswith("msg_")
    assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60

    row = WebhookDelivery.objects.get()
    assert row.status == DeliveryStatus.SUCCEEDED and row.webhook_id == received.headers["webhook-id"]
    assert row.execution_id == Execution.objects.get().id
    (attempt,) = row.attempt_log.all()
    assert attempt.status_code == 200 and attempt.response_excerpt.startswith("answer 200")
    assert len(attempt.response_excerpt) == transport.EXCERPT_BYTES  # the answer was longer: only its start is kept


def test_a_purge_erases_the_content_kept_in_the_delivery_log(api, tenant, agent, receiver):
    """The log keeps a delivery's body for WEBHOOK_DELIVERY_RETENTION_DAYS: a purge of the execution
    erases its outputs there too, and what is still to be sent goes out erased, signed, `purged`."""
    endpoint = register(api, tenant, receiver.url)
    started = data_of(execute(api, agent, tenant, "hello"))
    assert started["output"]["text"] in WebhookDelivery.objects.get().body
    purge_execution(Execution(id=execution_uuid(started["execution_id"])))

    row = WebhookDelivery.objects.get()
    assert started["output"]["text"] not in row.body
    assert run_webhook_tasks(api.runtime) == 1
    data = verified(receiver.requests[0], endpoint["secret"])["data"]
    assert data["purged"] is True and "outputs" not in data
    assert data["execution_id"] == started["execution_id"] and data["status"] == "completed"


def test_a_tampered_body_or_another_secret_does_not_verify(api, tenant, agent, receiver):
    endpoint = register(api, tenant, receiver.url)
    execute(api, agent, tenant)
    run_webhook_tasks(api.runtime)
    (received,) = receiver.requests
    with pytest.raises(Exception, match="signature"):
        Webhook(endpoint["secret"]).verify(received.body.replace("completed", "failed"), received.headers)
    other = register(api, tenant, receiver.url)["secret"]
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(received.body, received.headers)


def test_failed_suspended_and_cancelled_events(api, tenant, workflow_agent, make_agent, receiver):
    endpoint = register(api, tenant, receiver.url)
    gate = workflow_agent({"id": "gate", "type": "human_gate", "prompt": "Ship it?"})
    suspended = data_of(execute(api, gate, tenant))
    assert suspended["status"] == "awaiting_approval"
    response = post(api, f"/executions/{suspended['execution_id']}/cancel", {}, auth(tenant))
    assert response.status_code == 200, response.content
    failing = make_agent(tenant.workspace, reply="a b c d", fail="the model broke")
    failed = execute(api, failing, tenant).json()["data"]
    run_webhook_tasks(api.runtime)

    events = [verified(r, endpoint["secret"]) for r in receiver.requests]
    by_type = {event["type"]: event["data"] for event in events}
    assert sorted(by_type) == ["execution.cancelled", "execution.failed", "execution.suspended"]
    assert by_type["execution.suspended"]["status"] == "awaiting_approval"
    assert by_type["execution.suspended"]["suspension"]["node_id"] == "gate"
    assert by_type["execution.suspended"]["suspension"]["prompt"] == "Ship it?"
    assert by_type["execution.cancelled"]["execution_id"] == suspended["execution_id"]
    assert by_type["execution.cancelled"]["error"]["code"] == "cancelled"
    assert by_type["execution.failed"]["execution_id"] == failed["execution_id"]
    assert by_type["execution.failed"]["status"] == "failed" and by_type["execution.failed"]["error"]["code"]
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 3


def test_only_the_subscribed_events_of_the_workspaces_enabled_endpoints(
    api, tenant, other_tenant, agent, make_agent, receiver
):
    register(api, tenant, receiver.url, ["execution.failed"])
    register(api, other_tenant, receiver.url, ALL_EVENTS)  # another workspace's endpoint hears nothing of ours
    disabled = register(api, tenant, receiver.url, ["execution.completed"])
    WebhookEndpoint.objects.filter(id=disabled["id"].removeprefix("webhook:")).update(enabled=False)
    execute(api, agent, tenant)
    assert not WebhookDelivery.objects.exists() and api.runtime.other_tasks == []
    execute(api, make_agent(tenant.workspace, reply="a b c d", fail="the model broke"), tenant)
    assert WebhookDelivery.objects.get().event_type == "execution.failed"


# --- the outbox --------------------------------------------------------------------------------------


def test_the_delivery_is_written_with_the_transition_and_published_after_commit(inline_runtime, tenant, agent):
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant.tenant,
        workspace=tenant.workspace,
        url="https://hooks.example.com/",
        events=ALL_EVENTS,
        secret="x",
    )
    execution = ExecutionFactory(agent=agent, state=ExecutionState.QUEUED)
    with transaction.atomic():
        services.do_request_cancel(execution)
        row = WebhookDelivery.objects.get(endpoint=endpoint)  # in the transition's transaction
        assert inline_runtime.other_tasks == []  # no message before the commit
    assert inline_runtime.other_tasks == [(DELIVER_TASK, (str(row.id),))]
    assert row.event_type == "execution.cancelled" and json.loads(row.body)["data"]["status"] == "cancelled"

    rolled_back = ExecutionFactory(agent=agent, state=ExecutionState.QUEUED)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.do_request_cancel(rolled_back)
        raise RuntimeError("the transaction fails after the transition")
    assert WebhookDelivery.objects.filter(execution_id=rolled_back.id).count() == 0
    assert len(inline_runtime.other_tasks) == 1


def test_a_message_that_could_not_be_published_is_swept(inline_runtime, tenant, agent, monkeypatch, receiver):
    WebhookEndpoint.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, url=receiver.url, events=ALL_EVENTS, secret="whsec_AAAA"
    )

    def broker_down(name, args=(), **options):
        raise ConnectionError("redis is down")

    from config import celery_app

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    services.do_request_cancel(ExecutionFactory(agent=agent, state=ExecutionState.QUEUED))
    row = WebhookDelivery.objects.get()
    assert row.dispatched_at is None and row.status == DeliveryStatus.PENDING  # marked for the sweep
    monkeypatch.setattr(celery_app, "send_task", inline_runtime.send_task)
    assert sweep_due() == [row.id]
    assert sweep_due() == []  # published once: not again while its message is out
    run_webhook_tasks(inline_runtime)
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED and len(receiver.requests) == 1


# --- retries -----------------------------------------------------------------------------------------


def test_retries_with_backoff_and_one_webhook_id(api, tenant, agent, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.4
    receiver.script = [500, 503]  # fails twice, then answers 200
    endpoint = register(api, tenant, receiver.url)
    execute(api, agent, tenant)
    run_webhook_tasks(api.runtime)
    first = WebhookDelivery.objects.get()
    assert first.status == DeliveryStatus.PENDING and first.last_status_code == 500 and first.last_error == "HTTP 500"
    due_in = (first.next_attempt_at - first.attempt_log.get().started_at).total_seconds()
    assert 0.4 <= due_in < 0.4 + 1
    assert sweep_due() == []  # not due yet
    deliver_until_done(api.runtime)

    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # the same id on every attempt
    for received in receiver.requests:
        assert verified(received, endpoint["secret"])["type"] == "execution.completed"
    assert [r.body for r in receiver.requests] == [receiver.requests[0].body] * 3
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8  # base, then twice the base
    row = WebhookDelivery.objects.get()
    assert row.status == DeliveryStatus.SUCCEEDED and row.attempts == 3
    assert [a.status_code for a in row.attempt_log.order_by("number")] == [500, 503, 200]
    assert WebhookEndpoint.objects.get().consecutive_failures == 0  # a success resets the count


def test_the_default_schedule_backs_off_exponentially_for_24_hours(settings):
    """With the defaults of config/settings.py (settings_test shortens the base for the other tests)."""
    settings.WEBHOOK_RETRY_BASE_SECONDS = 5
    settings.WEBHOOK_RETRY_MAX_DELAY_SECONDS = 7200
    delays = [retry_delay(n) for n in range(1, 16)]
    assert delays[:6] == [5, 10, 20, 40, 80, 160]
    assert all(b == min(2 * a, 7200) for a, b in zip(delays, delays[1:]))
    assert max(delays) == 7200
    # within the window of 24 h: 11 doubling delays (5 s to 85 min, about 2.8 h in all), then one every 2 h
    window, elapsed, attempts = 24 * 3600, 0, 1
    while elapsed + retry_delay(attempts) <= window:
        elapsed += retry_delay(attempts)
        attempts += 1
    assert attempts == 1 + 11 + 10 and window - 7200 < elapsed <= window


def test_a_delivery_fails_once_its_retry_window_is_over(inline_runtime, tenant, agent, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.2
    settings.WEBHOOK_RETRY_WINDOW_SECONDS = 0.5
    receiver.default = 500
    WebhookEndpoint.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, url=receiver.url, events=ALL_EVENTS, secret="whsec_AAAA"
    )
    services.do_request_cancel(ExecutionFactory(agent=agent, state=ExecutionState.QUEUED))
    deliver_until_done(inline_runtime)
    row = WebhookDelivery.objects.get()
    assert row.status == DeliveryStatus.FAILED and row.finished_at and row.next_attempt_at is None
    assert 2 <= row.attempts <= 4 and len(receiver.requests) == row.attempts


def test_finished_deliveries_are_deleted_after_their_retention(db, tenant, settings):
    settings.WEBHOOK_DELIVERY_RETENTION_DAYS = 30
    old, recent, pending = (_endpoint_delivery(tenant, "https://hooks.example.com/") for _ in range(3))
    WebhookDelivery.objects.filter(id=old.id).update(
        status=DeliveryStatus.SUCCEEDED, finished_at=timezone.now() - timedelta(days=30, minutes=1)
    )
    WebhookDelivery.objects.filter(id=recent.id).update(
        status=DeliveryStatus.FAILED, finished_at=timezone.now() - timedelta(days=29, hours=23)
    )
    WebhookDelivery.objects.filter(id=pending.id).update(created_at=timezone.now() - timedelta(days=90))
    assert delivery.purge_old_deliveries() == 1
    assert set(WebhookDelivery.objects.values_list("id", flat=True)) == {recent.id, pending.id}


# --- SSRF ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, public",
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::a00:1", False),
        ("2002:7f00:1::1", False),
        ("2001:db8::1", False),
        ("8.8.8.8", True),
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", False),  # a mapped address is not a global IPv6 one
    ],
)
def test_which_addresses_are_public(address, public):
    assert transport.is_public_address(address) is public


def test_make_run_allows_private_targets_unless_told_otherwise(monkeypatch):
    from ops.management.commands.run_platform import platform_env

    monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE_URLS", raising=False)
    assert platform_env()["WEBHOOK_ALLOW_PRIVATE_URLS"] == "true"
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "false")
    assert platform_env()["WEBHOOK_ALLOW_PRIVATE_URLS"] == "false"


def test_private_targets_are_refused_by_default_outside_make_run():
    """config/settings.py without the variable (settings_test turns it on for the suite's receivers)."""
    env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_ALLOW_PRIVATE_URLS"}
    code = "import config.settings as s; print(s.WEBHOOK_ALLOW_PRIVATE_URLS)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def _endpoint_delivery(tenant, url) -> WebhookDelivery:
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, url=url, events=ALL_EVENTS, secret="whsec_AAAA"
    )
    return WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_type="execution.completed",
        body="{}",
        next_attempt_at=timezone.now(),
        retry_until=timezone.now() + timedelta(hours=1),
    )


def test_private_targets_are_refused_at_delivery_time(db, tenant, receiver, settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # a name of ours that resolves to loopback
        return real_getaddrinfo("127.0.0.1" if host == "hooks.internal.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    urls = [
        receiver.url,
        f"http://[::1]:{receiver.port}/",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        f"http://localhost:{receiver.port}/",
        f"http://hooks.internal.test:{receiver.port}/",
    ]
    for url in urls:
        row = _endpoint_delivery(tenant, url)
        assert delivery.do_deliver(row.id) == "failed"
        attempt = WebhookAttempt.objects.get(delivery=row)
        assert attempt.status_code is None and attempt.error.startswith("blocked_address"), (url, attempt.error)
        assert "abc" not in attempt.error  # the URL's query (a token) is not in the log
    assert receiver.requests == []

    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    row = _endpoint_delivery(tenant, f"http://hooks.internal.test:{receiver.port}/in")
    assert delivery.do_deliver(row.id) == "succeeded"
    (received,) = receiver.requests
    assert received.headers["host"] == f"hooks.internal.test:{receiver.port}"  # the URL's name, the checked address


def test_the_connection_goes_to_the_address_that_was_checked(db, tenant, settings, monkeypatch):
    """DNS rebinding: the name is resolved once, and the connection is made to that address; a
    second answer (an internal address) is never asked for, let alone used."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    answers = iter(["93.184.215.14", "127.0.0.1"])
    resolved, connected = [], []

    def getaddrinfo(host, port, *args, **kwargs):
        resolved.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    def connect_tcp(self, host, port, *args, **kwargs):
        connected.append((host, port))
        raise httpcore.ConnectError("no route in the test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    row = _endpoint_delivery(tenant, "https://rebind.example.com/hook")
    assert delivery.do_deliver(row.id) == "failed"
    assert resolved == ["rebind.example.com"] and connected == [("93.184.215.14", 443)]
    assert ipaddress.ip_address(connected[0][0]).is_global


def _certificates(tmp_path, name: str):
    """A CA and a server certificate for `name` signed by it (files), as a real receiver would have."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def subject(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = timezone.now()
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject("test CA"))
        .issuer_name(subject("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"


def test_https_to_the_checked_address_verifies_the_certificate_of_the_name(
    db, tenant, receiver, settings, monkeypatch, tmp_path
):
    """The connection goes to the resolved address, while TLS sends the URL's name (SNI) and checks
    the certificate against it: a certificate for the name passes, the same server by its IP fails."""
    import ssl

    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    name = "hooks.internal.test"
    ca, cert, key = _certificates(tmp_path, name)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_names = []
    server_context.sni_callback = lambda sock, server_name, context: server_names.append(server_name)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            receiver.answer(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real_getaddrinfo, real_context = socket.getaddrinfo, ssl.create_default_context
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *args, **kwargs: real_getaddrinfo("127.0.0.1" if host == name else host, *args, **kwargs),
    )
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: real_context(cafile=str(ca)))
    try:
        assert delivery.do_deliver(_endpoint_delivery(tenant, f"https://{name}:{port}/in").id) == "succeeded"
        assert server_names == [name]
        assert receiver.requests[0].headers["host"] == f"{name}:{port}"
        assert delivery.do_deliver(_endpoint_delivery(tenant, f"https://127.0.0.1:{port}/in").id) == "failed"
        assert "CERTIFICATE_VERIFY_FAILED" in WebhookAttempt.objects.order_by("id").last().error
        assert len(receiver.requests) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_not_followed(db, tenant, receiver):
    receiver.script = [302]
    row = _endpoint_delivery(tenant, receiver.url)
    assert delivery.do_deliver(row.id) == "failed"
    assert len(receiver.requests) == 1 and WebhookAttempt.objects.get().status_code == 302


def test_a_target_that_does_not_answer_in_time_is_a_timeout(db, tenant, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.script = [None]  # holds the request
    row = _endpoint_delivery(tenant, receiver.url)
    started = time.monotonic()
    assert delivery.do_deliver(row.id) == "failed"
    assert time.monotonic() - started < 2
    assert WebhookAttempt.objects.get().error.startswith("timeout")


# --- an endpoint deleted while its deliveries are in flight ----------------------------------------------


def _attempt_in_thread(delivery_id):
    """do_deliver on a thread of its own (its own connection), as a worker runs it; (thread, outcome)."""
    from django.db import connection

    outcome = {}

    def attempt():
        try:
            outcome["value"] = delivery.do_deliver(delivery_id)
        except Exception as exc:  # what the worker would raise
            outcome["value"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=attempt)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_deleting_an_endpoint_while_an_attempt_is_in_flight(client, tenant, receiver):
    """The receiver holds the request; DELETE answers 204 at once, and the attempt that comes back
    to a deleted delivery ends quietly instead of raising in the worker."""
    receiver.script = [None]
    endpoint = register(client, tenant, receiver.url)
    row = WebhookDelivery.objects.create(
        endpoint_id=endpoint["id"].removeprefix("webhook:"),
        event_type="execution.completed",
        body="{}",
        next_attempt_at=timezone.now(),
        retry_until=timezone.now() + timedelta(hours=1),
    )
    thread, outcome = _attempt_in_thread(row.id)
    assert receiver.held.wait(10)
    response = client.delete(f"/webhooks/{endpoint['id']}", headers=auth(tenant, "workspace"))
    assert response.status_code == 204
    receiver.release.set()
    thread.join(30)
    assert outcome["value"] == "endpoint_deleted"
    assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_deleting_an_endpoint_while_an_attempt_writes_its_outcome(client, tenant, receiver, monkeypatch):
    """The attempt commits its log line after a Python-side cascade deleted the attempts and before
    it deleted their deliveries (the window that made `DELETE /webhooks/{id}` a 500 on the foreign
    key): one statement and the database's ON DELETE CASCADE leave no such window."""
    endpoint = register(client, tenant, receiver.url)
    row = WebhookDelivery.objects.create(
        endpoint_id=endpoint["id"].removeprefix("webhook:"),
        event_type="execution.completed",
        body="{}",
        next_attempt_at=timezone.now(),
        retry_until=timezone.now() + timedelta(hours=1),
    )
    writing, proceed, collected, committed = (threading.Event() for _ in range(4))
    real_succeeded, real_raw_delete = delivery._succeeded, QuerySet._raw_delete

    def succeeded_slowly(row, status_code):  # inside the attempt's transaction, after its log line
        writing.set()
        proceed.wait(10)
        real_succeeded(row, status_code)

    def raw_delete_then_wait(queryset, using):  # a Python-side cascade deletes the attempts first
        deleted = real_raw_delete(queryset, using)
        if queryset.model is WebhookAttempt:
            collected.set()
            committed.wait(10)
        return deleted

    monkeypatch.setattr(delivery, "_succeeded", succeeded_slowly)
    monkeypatch.setattr(QuerySet, "_raw_delete", raw_delete_then_wait)
    thread, outcome = _attempt_in_thread(row.id)
    assert writing.wait(10)
    deleted = {}

    def delete():
        from django.db import connection

        try:
            deleted["response"] = client.delete(f"/webhooks/{endpoint['id']}", headers=auth(tenant, "workspace"))
        except Exception as exc:  # Django's test client raises what a server answers with a 500
            deleted["response"] = exc
        finally:
            connection.close()

    deleter = threading.Thread(target=delete)
    deleter.start()
    collected.wait(2)  # a Python-side cascade deleted the attempts; one statement never waits here
    proceed.set()
    thread.join(30)
    committed.set()
    deleter.join(30)
    assert getattr(deleted["response"], "status_code", None) == 204, deleted["response"]
    assert outcome["value"] in ("succeeded", "endpoint_deleted"), outcome
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()


# --- automatic disabling --------------------------------------------------------------------------------


def test_an_endpoint_that_keeps_failing_is_disabled(inline_runtime, tenant, agent, receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 0
    settings.WEBHOOK_RETRY_BASE_SECONDS = 3600  # no retry comes due during the test
    receiver.default = 500
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, url=receiver.url, events=ALL_EVENTS, secret="whsec_AAAA"
    )
    for _ in range(2):
        services.do_request_cancel(ExecutionFactory(agent=agent, state=ExecutionState.QUEUED))
        run_webhook_tasks(inline_runtime)
        WebhookEndpoint.objects.update(backoff_until=None)  # the endpoint's backoff is over
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 2  # one below the limit
    waiting = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).count()
    assert waiting == 2

    services.do_request_cancel(ExecutionFactory(agent=agent, state=ExecutionState.QUEUED))
    run_webhook_tasks(inline_runtime)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at and "failed attempts in a row" in endpoint.disabled_reason
    assert set(WebhookDelivery.objects.values_list("status", "last_error")) == {
        (DeliveryStatus.FAILED, "endpoint disabled")
    }
    services.do_request_cancel(ExecutionFactory(agent=agent, state=ExecutionState.QUEUED))
    assert WebhookDelivery.objects.count() == 3  # a disabled endpoint gets no new deliveries
    assert len(receiver.requests) == 3


def test_failures_must_also_last_before_an_endpoint_is_disabled(db, tenant, receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 2
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 3600
    receiver.default = 500
    for _ in range(3):
        delivery.do_deliver(_endpoint_delivery(tenant, receiver.url).id)
    # each delivery above has its own endpoint: one failure each, nothing disabled
    assert WebhookEndpoint.objects.filter(enabled=True).count() == 3
    endpoint = WebhookEndpoint.objects.first()
    WebhookEndpoint.objects.filter(id=endpoint.id).update(consecutive_failures=5, backoff_until=None)
    row = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_type="execution.failed",
        body="{}",
        next_attempt_at=timezone.now(),
        retry_until=timezone.now(),
    )
    delivery.do_deliver(row.id)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 6  # failing for less than an hour
    WebhookEndpoint.objects.filter(id=endpoint.id).update(
        failing_since=timezone.now() - timedelta(hours=2), backoff_until=None
    )
    row = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_type="execution.failed",
        body="{}",
        next_attempt_at=timezone.now(),
        retry_until=timezone.now(),
    )
    delivery.do_deliver(row.id)
    endpoint.refresh_from_db()
    assert not endpoint.enabled


# --- the admin: the delivery log and manual redelivery ----------------------------------------------------


def test_the_delivery_log_and_manual_redelivery_in_the_admin(inline_runtime, client, tenant, agent, receiver, settings):
    settings.WEBHOOK_RETRY_WINDOW_SECONDS = 0  # no retries: the first failure is final
    receiver.script = [500]
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, url=receiver.url, events=ALL_EVENTS, secret="whsec_AAAA"
    )
    services.do_request_cancel(ExecutionFactory(agent=agent, state=ExecutionState.QUEUED))
    run_webhook_tasks(inline_runtime)
    row = WebhookDelivery.objects.get()
    assert row.status == DeliveryStatus.FAILED

    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    listing = client.get("/admin/webhooks/webhookdelivery/", {"endpoint__id__exact": str(endpoint.id)})
    assert row.webhook_id in listing.content.decode() and "HTTP 500" in listing.content.decode()
    page = client.get(f"/admin/webhooks/webhookdelivery/{row.id}/change/").content.decode()
    assert "answer 500" in page and "500" in page  # the attempt with its status code and excerpt

    settings.WEBHOOK_RETRY_WINDOW_SECONDS = 3600
    response = client.post(
        "/admin/webhooks/webhookdelivery/", {"action": "redeliver", "_selected_action": [str(row.id)]}, follow=True
    )
    assert any("Redelivering 1" in str(m) for m in response.context["messages"])
    run_webhook_tasks(inline_runtime)
    row.refresh_from_db()
    assert row.status == DeliveryStatus.SUCCEEDED and row.attempts == 2
    assert [r.headers["webhook-id"] for r in receiver.requests] == [row.webhook_id] * 2
    page = client.get(f"/admin/webhooks/webhookdelivery/{row.id}/change/").content.decode()
    assert "answer 200" in page

    # a disabled endpoint's deliveries are not redelivered until it is enabled again
    WebhookEndpoint.objects.filter(id=endpoint.id).update(enabled=False)
    WebhookDelivery.objects.filter(id=row.id).update(status=DeliveryStatus.FAILED)
    response = client.post(
        "/admin/webhooks/webhookdelivery/", {"action": "redeliver", "_selected_action": [str(row.id)]}, follow=True
    )
    assert any("Skipped 1" in str(m) for m in response.context["messages"])
    client.post(
        "/admin/webhooks/webhookendpoint/", {"action": "enable_endpoints", "_selected_action": [str(endpoint.id)]}
    )
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 0


# --- end to end: a real worker killed mid-retry ----------------------------------------------------------


def test_no_delivery_is_lost_when_the_worker_dies_mid_attempt(live, worker, tenant, agent, receiver):
    """Attempt 1 gets a 500; attempt 2 is held by the receiver while the worker is SIGKILLed; once
    its lock expires beat's sweep hands the delivery to the new worker, whose attempt succeeds
    with the same webhook-id (settings_test: retries after 0.5 s, a 3 s timeout)."""
    receiver.script = [500, None]
    endpoint = register(live, tenant, receiver.url, ["execution.completed"])
    started = data_of(execute(live, agent, tenant))
    wait_for(receiver.held.is_set, timeout=30)
    worker.kill_and_restart()
    receiver.release.set()
    wait_for(lambda: len(receiver.requests) >= 3, timeout=60, interval=0.2)
    row = wait_for(lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).first(), timeout=30)

    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    for received in receiver.requests:
        event = verified(received, endpoint["secret"])
        assert event["data"]["execution_id"] == started["execution_id"]
    assert row.execution_id is not None and str(row.execution_id) == execution_uuid(started["execution_id"])
    assert row.attempts == 3
    # the killed attempt left no log line; the two that answered did
    assert [a.status_code for a in row.attempt_log.order_by("number")] == [500, 200]
