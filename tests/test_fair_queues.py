"""Fair queues: no backlog of one kind of work or of one tenant delays another.

- Each kind of work has its queue (settings) and its consumers (ops/processes.py): a flood of
  webhook deliveries to endpoints that never answer does not delay an execution.
- Within the execution queues the broker hands out the highest priority first
  (executions/fairness.py): another workspace's single execution does not wait behind one
  workspace's burst.
- A delivery's message is published once: the sweep publishes it again only when its queue is
  empty (core/broker.py); an endpoint gets at most WEBHOOK_ENDPOINT_MAX_IN_FLIGHT attempts at once,
  and none during its backoff.

The live tests run their own worker and webhooks processes on queues of their own (CELERY_QUEUE),
so the session's worker takes none of their messages.
"""

import socket
import threading
import time
from datetime import timedelta

import pytest
import redis
from celery import current_app
from django.conf import settings as django_settings
from django.utils import timezone

from core.broker import waiting_messages
from executions import fairness
from executions.models import Execution, ExecutionState
from ops import processes
from tests.conftest import CeleryProcess, _celery_flags
from tests.factories import TenantFactory
from tests.helpers import WORDS_20, auth, wait_for
from webhooks import delivery
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

QUEUE = "fair-test"  # CELERY_QUEUE of this module's processes: fair-test, fair-test.resumes, ... .webhooks
ASYNC = {"Prefer": "respond-async"}


def _queues(settings) -> None:
    """This process publishes to the module's queues (as its processes' settings derive them)."""
    settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE
    settings.RESUMES_QUEUE = f"{QUEUE}.resumes"
    settings.MEDIA_QUEUE = f"{QUEUE}.media"
    settings.EXECUTION_QUEUES = (QUEUE, f"{QUEUE}.resumes", f"{QUEUE}.media")
    settings.WEBHOOKS_QUEUE = f"{QUEUE}.webhooks"


@pytest.fixture
def empty_queues():
    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def purge():
        keys = client.keys(f"{QUEUE}*")
        if keys:
            client.delete(*keys)

    purge()
    yield
    purge()


# --- priorities ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_workspaces_starts_beyond_its_fair_share_of_the_window_go_behind_others(settings, tenant, other_tenant):
    settings.FAIR_SHARE_STARTS = 3
    settings.FAIR_SHARE_WINDOW_SECONDS = 60
    burst = [fairness.start_priority(tenant.workspace.id) for _ in range(5)]
    assert burst == [fairness.START] * 3 + [fairness.OVER_SHARE] * 2
    assert fairness.start_priority(other_tenant.workspace.id) == fairness.START
    assert fairness.RESUME < fairness.START < fairness.OVER_SHARE < fairness.REDISPATCH  # 0 is served first


def test_without_redis_a_start_still_gets_the_normal_priority(settings):
    fairness._redis.cache_clear()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        assert fairness.start_priority("any") == fairness.START
    finally:
        fairness._redis.cache_clear()


# --- webhooks: one message per delivery, per-endpoint slots and backoff ----------------------------


def _endpoint(tenant, url="http://127.0.0.1:9/hook") -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, url=url, events=["execution.completed"], secret="whsec_AAAA"
    )


def _delivery(endpoint, **fields) -> WebhookDelivery:
    now = timezone.now()
    return WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_type="execution.completed",
        body="{}",
        next_attempt_at=now,
        retry_until=now + timedelta(hours=1),
        **fields,
    )


@pytest.mark.django_db
def test_an_endpoint_with_its_maximum_in_flight_makes_the_next_delivery_wait_without_an_attempt(tenant, settings):
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 2
    endpoint = _endpoint(tenant)
    for _ in range(2):
        _delivery(endpoint, locked_until=timezone.now() + timedelta(seconds=30), attempts=1)  # in flight
    waiting = _delivery(endpoint)
    before = timezone.now()
    assert delivery.do_deliver(waiting.id) == "deferred"
    waiting.refresh_from_db()
    assert waiting.attempts == 0 and waiting.status == DeliveryStatus.PENDING
    assert waiting.next_attempt_at >= before + timedelta(seconds=delivery.ENDPOINT_BUSY_DELAY_SECONDS)
    assert waiting.dispatched_at is None  # the sweep publishes it when it is due
    # another endpoint of the same workspace is not held back
    other = _delivery(_endpoint(tenant, "http://127.0.0.1:9/other"))
    assert delivery.do_deliver(other.id) == "failed"


@pytest.mark.django_db
def test_after_a_failed_attempt_the_endpoints_other_deliveries_wait_for_its_backoff(tenant, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 60
    endpoint = _endpoint(tenant)  # port 9: refused at once
    first, second = _delivery(endpoint), _delivery(endpoint)
    assert delivery.do_deliver(first.id) == "failed"
    endpoint.refresh_from_db()
    assert endpoint.backoff_until > timezone.now() + timedelta(seconds=55)
    assert delivery.do_deliver(second.id) == "deferred"
    second.refresh_from_db()
    assert second.next_attempt_at == endpoint.backoff_until and second.attempts == 0
    # two failures in a row: twice the wait
    WebhookEndpoint.objects.filter(id=endpoint.id).update(backoff_until=None)
    WebhookDelivery.objects.filter(id=second.id).update(next_attempt_at=timezone.now())
    assert delivery.do_deliver(second.id) == "failed"
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 2
    assert endpoint.backoff_until > timezone.now() + timedelta(seconds=115)


@pytest.mark.django_db(transaction=True)
def test_the_sweep_publishes_a_stale_looking_message_again_only_when_its_queue_is_empty(tenant, settings, empty_queues):
    _queues(settings)
    stale = timezone.now() - timedelta(seconds=settings.EXECUTION_REDISPATCH_AFTER_SECONDS + 5)
    row = _delivery(_endpoint(tenant), dispatched_at=stale)
    # a backlog waits in the webhooks queue: the message is most likely in it
    current_app.send_task("workers.tasks.noop_roundtrip", args=["x"], queue=settings.WEBHOOKS_QUEUE)
    assert delivery.sweep_due() == []
    redis.Redis.from_url(settings.REDIS_URL).delete(settings.WEBHOOKS_QUEUE)
    assert waiting_messages(settings.WEBHOOKS_QUEUE) == 0
    assert delivery.sweep_due() == [row.id]
    row.refresh_from_db()
    assert row.dispatched_at > stale


# --- live: the flood and the burst ---------------------------------------------------------------------


class Blackhole:
    """A TCP server that accepts every connection and never answers: an endpoint that hangs each
    attempt for the whole WEBHOOK_TIMEOUT_SECONDS. Counts the connections open at once."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(512)
        self.port = self.server.getsockname()[1]
        self.held, self.most_at_once, self.closed = [], 0, False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held = [c for c in self.held if c.fileno() != -1 and _open(c)] + [connection]
            self.most_at_once = max(self.most_at_once, len(self.held))

    def close(self):
        self.closed = True
        self.server.close()
        for connection in self.held:
            connection.close()


def _open(connection) -> bool:
    connection.setblocking(False)
    try:
        return connection.recv(65536, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.fixture
def fair_stack(services_env, tmp_path, empty_queues):
    """A worker (the execution queues) and a webhooks process of their own, on this module's queues."""
    env = {**services_env, "CELERY_QUEUE": QUEUE, "WEBHOOK_WORKER_CONCURRENCY": "16"}
    started = []
    try:
        queues = f"{QUEUE},{QUEUE}.resumes,{QUEUE}.media"
        started.append(
            CeleryProcess(processes.worker(4, queues, *_celery_flags("fair-worker")), env, tmp_path / "worker.log")
        )
        command, process_env = processes.webhooks(*_celery_flags("fair-webhooks"))
        command[command.index("--queues") + 1] = f"{QUEUE}.webhooks"
        command[command.index("--concurrency") + 1] = "16"
        started.append(CeleryProcess((command, process_env), env, tmp_path / "webhooks.log"))
        yield started
    finally:
        for process in started:
            process.stop()


def _start(client, agent, tenant) -> str:
    response = client.post(
        f"/agents/{agent.id}/execute",
        {"message": "hi"},
        content_type="application/json",
        headers={**auth(tenant), **ASYNC},
    )
    assert response.status_code == 202, response.content
    return response.json()["data"]["execution_id"].removeprefix("execution:")


def _finished(execution_id) -> bool:
    return Execution.objects.filter(id=execution_id, state=ExecutionState.COMPLETED).exists()


@pytest.mark.django_db(transaction=True)
def test_a_flood_of_deliveries_to_dead_endpoints_does_not_delay_another_tenants_execution(
    fair_stack, client, settings, tenant, make_agent
):
    """20 endpoints that never answer, 200 deliveries: the webhooks process is busy for minutes
    (3 s per attempt), yet another tenant's execution finishes in its normal time, each endpoint
    never has more than its maximum in flight, and each delivery has one message."""
    _queues(settings)
    hole = Blackhole()
    try:
        endpoints = [_endpoint(tenant, f"http://127.0.0.1:{hole.port}/hook/{n}") for n in range(20)]
        rows = [_delivery(endpoint, dispatched_at=timezone.now()) for endpoint in endpoints for _ in range(10)]
        for row in rows:
            current_app.send_task(delivery.DELIVER_TASK, args=[str(row.id)], queue=settings.WEBHOOKS_QUEUE)
        wait_for(lambda: hole.most_at_once >= 16, timeout=30)  # the webhooks process is saturated

        other = TenantFactory()
        quick = make_agent(other.workspace, chunk_delay_ms=0, reply=WORDS_20)
        started = time.monotonic()
        execution_id = _start(client, quick, other)
        wait_for(lambda: _finished(execution_id), timeout=30)
        took = time.monotonic() - started
        assert took < 3, f"the other tenant's execution took {took:.1f} s during the flood"

        for _ in range(3):  # beat's sweep during the flood publishes only what has no message out
            out = set(WebhookDelivery.objects.filter(dispatched_at__isnull=False).values_list("id", flat=True))
            assert out and not out & set(delivery.sweep_due())
        assert waiting_messages(settings.WEBHOOKS_QUEUE) <= len(rows)
        in_flight = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, locked_until__gt=timezone.now())
        for endpoint in endpoints:
            assert in_flight.filter(endpoint=endpoint).count() <= settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT
    finally:
        # no attempt left for anyone (the session's housekeeping sweeps this database too): the flood
        # ends before the test database is flushed under it
        hole.close()
        WebhookDelivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        time.sleep(2)


@pytest.mark.django_db(transaction=True)
def test_another_workspaces_execution_does_not_wait_behind_one_workspaces_burst(
    fair_stack, client, settings, tenant, make_agent
):
    """200 queued executions of one workspace, ~0.5 s each on a worker of 4 threads (about 25 s of
    work): another workspace's single execution starts among the next ones, not after them."""
    _queues(settings)
    settings.FAIR_SHARE_STARTS = 5
    slow = make_agent(tenant.workspace, chunk_delay_ms=100, reply="one two three four five")
    burst = [_start(client, slow, tenant) for _ in range(200)]

    other = TenantFactory()
    quick = make_agent(other.workspace, chunk_delay_ms=0, reply=WORDS_20)
    started = time.monotonic()
    execution_id = _start(client, quick, other)
    wait_for(lambda: _finished(execution_id), timeout=60)
    took = time.monotonic() - started
    still_queued = Execution.objects.filter(id__in=burst, state=ExecutionState.QUEUED).count()
    assert took < 3, f"the other workspace's execution took {took:.1f} s behind the burst"
    assert still_queued > 100, still_queued  # it went ahead of most of the burst
