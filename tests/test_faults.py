"""Faults of a running stack: the broker stopped during a POST and restarted while the Celery
worker runs; PostgreSQL or Redis down behind the API. Real servers, really stopped."""

import json
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from executions.models import Execution, ExecutionState
from ops import local_services, processes
from tests.conftest import REPO_ROOT, _free_port
from tests.helpers import WORDS_20, auth, execution_uuid, stream_agent, wait_for
from tests.test_stream_scale import start_execution

pytestmark = pytest.mark.skipif(
    not local_services.uses_local_services(), reason="stops and starts the embedded servers"
)


class RedisStopped:
    """The embedded Redis stopped (a real SHUTDOWN) inside the block, started again when it ends."""

    def __enter__(self):
        local_services._stop_redis()
        wait_for(lambda: not local_services._port_open(local_services.REDIS_PORT), timeout=10)
        return self

    def __exit__(self, *exc_info):
        local_services._start_redis()


def test_a_post_while_the_broker_is_down_answers_and_its_execution_runs_once_redis_is_back(
    live, worker, housekeeping, tenant, agent
):
    """The row committed, the task could not be published: the POST answers its usual SSE stream
    (not a 500), the row is marked in PostgreSQL, and once Redis answers again the reaper publishes
    it at its next sweep, long before EXECUTION_REDISPATCH_AFTER_SECONDS. The Celery worker (its
    threads pool) lives through the restart: the same process runs it."""
    worker_pid, received, outcome = worker.pid, [], {}

    def stream():
        try:
            with httpx.stream(
                "POST",
                f"{live}/agents/{agent.id}/execute/stream",
                headers=auth(tenant),
                json={"message": "hi"},
                timeout=60,
            ) as response:
                outcome["status"] = response.status_code
                outcome["content_type"] = response.headers["content-type"]
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line.removeprefix("data: ")))
        except Exception as exc:
            outcome["error"] = exc

    with RedisStopped():
        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        wait_for(lambda: received or "error" in outcome, timeout=20)
        assert outcome.get("status") == 200 and outcome["content_type"].startswith("text/event-stream"), outcome
        assert received[0]["type"] == "start"
        execution = Execution.objects.get(id=execution_uuid(received[0]["execution_id"]))
        assert execution.state == ExecutionState.QUEUED and execution.dispatched_at is None  # the outbox mark
        time.sleep(1)
    restarted_at = time.monotonic()

    reader.join(45)
    assert not reader.is_alive() and "error" not in outcome, outcome
    assert received[-1]["type"] == "final" and received[-1]["status"] == "completed"
    assert time.monotonic() - restarted_at < 25  # the sweep after the broker is back, not a minute later
    assert [event["seq"] for event in received] == list(range(1, len(received) + 1))
    assert worker.process.poll() is None and worker.pid == worker_pid  # not restarted by the test
    assert "Unrecoverable error" not in worker.log()

    events = stream_agent(live, agent, tenant)  # and the next one runs as usual
    assert "".join(e.data["text"] for e in events if e.data["type"] == "text") == WORDS_20


def test_the_worker_survives_redis_restarts_with_runs_in_flight(live, worker, tenant, make_agent):
    """Celery/kombu 5.7 ended the worker ("Unrecoverable error") when Redis restarted under runs
    in flight: closing the lost connection, and then each run's ack on it, raised errors that are
    no connection errors (config/celery.py). The same process runs the next executions."""
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=WORDS_20)
    worker_pid = worker.pid
    for _ in range(2):
        ids = [start_execution(live, tenant, agent) for _ in range(5)]
        wait_for(
            lambda ids=ids: Execution.objects.filter(id__in=ids, state=ExecutionState.RUNNING).count() == 5, timeout=20
        )
        with RedisStopped():
            time.sleep(1)
        wait_for(
            lambda ids=ids: Execution.objects.filter(id__in=ids, state=ExecutionState.COMPLETED).count() == 5,
            timeout=30,
        )
        events = stream_agent(live, agent, tenant, timeout=60)
        assert events[-1].data["type"] == "final"
    assert worker.process.poll() is None and worker.pid == worker_pid
    assert "Unrecoverable error" not in worker.log()


# --- PostgreSQL down behind the API ---------------------------------------------------------------


def concrete_routes() -> list[str]:
    """Every route of the URL conf but the admin's, its parameters filled in."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns, prefix=""):
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                if not route.startswith("admin/"):
                    yield from walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern):
                yield route

    samples = {"uuid": "00000000-0000-4000-8000-000000000001", "str": "x1"}
    return sorted(
        {
            "/" + re.sub(r"<(?:(\w+):)?\w+>", lambda m: samples.get(m.group(1) or "str", "x1"), route)
            for route in walk(get_resolver().url_patterns)
        }
    )


@pytest.fixture
def api_without_postgres(services_env, tmp_path):
    """A real API server whose PostgreSQL does not answer (nothing listens on its port)."""
    port = _free_port()
    command, process_env = processes.api("127.0.0.1", port)
    env = {
        **services_env,
        **process_env,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{_free_port()}/nothing",
        "ASGI_SYNC_THREADS": "40",  # so that the requests below wait for their pool timeouts together
    }
    log = open(tmp_path / "api.log", "w")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: local_services._port_open(port), timeout=30)
        yield base_url
    finally:
        process.terminate()
        process.wait(10)


def test_every_route_answers_json_and_a_503_with_retry_after_while_postgres_is_down(api_without_postgres, tenant):
    started = time.monotonic()
    health = httpx.get(f"{api_without_postgres}/healthz", timeout=5)
    assert time.monotonic() - started < 2
    assert health.status_code == 503 and health.json()["checks"]["postgres"].startswith("error")

    headers = {**auth(tenant), "Content-Type": "application/json"}

    def call(method_and_path):
        method, path = method_and_path
        body = b"{}" if method == "POST" else None
        return (
            method,
            path,
            httpx.request(method, f"{api_without_postgres}{path}", headers=headers, content=body, timeout=30),
        )

    # the schema, its docs pages and the front door are static; a download link's signature is checked
    # (here: refused) before any query, and so are a webhook's sender (Fal's signature) and workspace
    # id (RevenueCat's), and /metrics's token
    needs_no_dependency = {
        "/",
        "/metrics",
        "/healthz",
        "/livez",
        "/readyz",
        "/api/schema/",
        "/api/docs/",
        "/api/redoc/",
        "/files/download/x1",
        "/inbound/fal",
        "/inbound/revenuecat/x1",
    }
    calls = [
        (method, path) for path in concrete_routes() if path not in needs_no_dependency for method in ("GET", "POST")
    ]
    with ThreadPoolExecutor(40) as executor:
        answers = list(executor.map(call, calls))

    needs_the_database = set()
    for method, path, response in answers:
        where = f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert response.status_code < 500 or response.status_code == 503, where
        if response.status_code == 503:
            assert response.headers["content-type"].startswith("application/json"), where
            assert response.headers["Retry-After"].isdigit(), where
            assert response.json()["error"]["code"] == "service_unavailable", where
            needs_the_database.add(path)
    # every route said so: each needs the database (authenticating the key, at least)
    answered = {path: response.status_code for _, path, response in answers if path not in needs_the_database}
    assert not answered, answered
