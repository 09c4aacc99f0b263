"""The API's request path holds no database connection and no thread while a stream or a sync call
waits (config/asgi.py), so more concurrent waits than the API's pool of 10 connections all succeed;
and the admin's static files are served by the async middleware chain."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.db import connection

from executions.models import Execution, ExecutionState
from ops import processes
from tests.helpers import WORDS_20, auth, execute, execution_uuid, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 30
API_POOL_SIZE = int(processes.API_ENV["DB_POOL_MAX_SIZE"])
UNFINISHED = [ExecutionState.QUEUED, ExecutionState.RUNNING]


def _api_connections() -> int:
    """The API process's Django connections to the test database (named by DB_APPLICATION_NAME)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [processes.API_ENV["DB_APPLICATION_NAME"]],
        )
        return cursor.fetchone()[0]


def _api_pid(base_url: str) -> int:
    """The uvicorn process serving base_url (the live fixture only gives its URL)."""
    port = base_url.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"config.asgi:application" in args and port.encode() in args:
            return int(cmdline.parent.name)
    raise AssertionError("uvicorn process not found")


def _thread_bound(idle_threads: int) -> int:
    """No thread per waiting request: on top of the idle process's, at most the shared sync threads
    (as many as pooled connections) and asyncio's default executor (DNS lookups, ...)."""
    bound = idle_threads + API_POOL_SIZE + min(32, (os.cpu_count() or 1) + 4)
    assert bound < idle_threads + STREAMS
    return bound


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


class Sampler:
    """Samples the API's connections and threads, and times GET /executions/{id}, until stopped."""

    def __init__(self, base_url: str, headers: dict):
        self.base_url, self.headers, self.pid = base_url, dict(headers), _api_pid(base_url)
        self.error = None
        self.connections, self.threads, self.detail_seconds, self.unfinished = [], [], [], []
        self.execution_id = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def _run(self):
        from django.db import connections

        try:
            with httpx.Client(timeout=60) as client:
                while not self._stop.wait(0.2):
                    self.connections.append(_api_connections())
                    self.threads.append(_threads(self.pid))
                    self.unfinished.append(Execution.objects.filter(state__in=UNFINISHED).count())
                    if self.execution_id:
                        started = time.monotonic()
                        response = client.get(f"{self.base_url}/executions/{self.execution_id}", headers=self.headers)
                        assert response.status_code == 200, response.text
                        self.detail_seconds.append(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - raised again in the test's thread
            self.error = exc
        finally:
            connections.close_all()


def test_more_streams_than_pooled_connections_all_get_their_whole_log(live, tenant, make_agent):
    slow = make_agent(tenant.workspace, chunk_delay_ms=150, reply=WORDS_20)  # about 3 s of streaming
    headers = auth(tenant)  # (httpx-sse adds Accept: text/event-stream to it)
    idle_threads = _threads(_api_pid(live))
    opened, ended = [], []

    def follow(method, url, body=None, on_first=None):
        def stop(events):
            if len(events) == 1:
                opened.append(time.monotonic())
                if on_first:
                    on_first(events[0].data["execution_id"])
            return False

        events = read_stream(method, url, headers, body, stop=stop)
        ended.append(time.monotonic())
        return events

    with Sampler(live, headers) as sampler, ThreadPoolExecutor(STREAMS) as pool:
        # two executions started over POST .../execute/stream, each followed by 14 more GET .../events
        ids = []
        started = threading.Condition()

        def got_id(execution_id):
            with started:
                ids.append(execution_id)
                started.notify_all()

        posts = [
            pool.submit(follow, "POST", f"{live}/agents/{slow.id}/execute/stream", {"message": "hi"}, got_id)
            for _ in range(2)
        ]
        with started:
            assert started.wait_for(lambda: len(ids) == 2, timeout=30)
        sampler.execution_id = execution_uuid(ids[0])
        gets = [
            pool.submit(follow, "GET", f"{live}/executions/{execution_uuid(ids[n % 2])}/events")
            for n in range(STREAMS - 2)
        ]
        streams = [future.result() for future in posts + gets]

    assert max(opened) < min(ended), "the streams were not all open at once"
    for events in streams:
        assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1].data["type"] == "final" and events[-1].data["status"] == "completed"
        assert "".join(e.data["text"] for e in events if e.data["type"] == "text") == WORDS_20
    assert max(sampler.connections) <= API_POOL_SIZE
    assert max(sampler.threads) <= _thread_bound(idle_threads), (idle_threads, sampler.threads)
    assert sampler.detail_seconds and max(sampler.detail_seconds) < 2, sampler.detail_seconds


def test_more_sync_executes_than_pooled_connections_all_complete(live, tenant, streaming_agent):
    headers = auth(tenant)
    idle_threads = _threads(_api_pid(live))

    def call(_):
        response = execute(live, streaming_agent, headers=headers, timeout=120)
        return response.status_code, response.json()

    with Sampler(live, headers) as sampler, ThreadPoolExecutor(STREAMS) as pool:
        results = list(pool.map(call, range(STREAMS)))

    assert [status for status, _ in results] == [200] * STREAMS, results
    assert all(
        body["data"]["status"] == "completed" and body["data"]["output"]["text"] == WORDS_20 for _, body in results
    )
    # more calls waited at once than there are connections: none held one while it waited
    assert max(sampler.unfinished) > API_POOL_SIZE, sampler.unfinished
    assert max(sampler.connections) <= API_POOL_SIZE
    assert max(sampler.threads) <= _thread_bound(idle_threads), (idle_threads, sampler.threads)


def test_admin_static_files_are_served(live):
    response = httpx.get(f"{live}/static/admin/css/base.css", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "body" in response.text


def test_admin_login_action_and_message_through_the_live_server(live, tenant):
    """Sessions, CSRF, messages and the admin's transactions under uvicorn, where every sync call
    gets its connection from the pool and gives it back."""
    import re

    from django.contrib.auth.models import User

    User.objects.create_superuser("ops", "ops@example.com", "pw")
    api_key = tenant.end_user_key.api_key
    with httpx.Client(base_url=live, timeout=30) as client:
        login = client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
        response = client.post(
            "/admin/login/?next=/admin/",
            data={"username": "ops", "password": "pw", "csrfmiddlewaretoken": token, "next": "/admin/"},
        )
        assert response.status_code == 302 and response.headers["location"] == "/admin/"
        assert "Site administration" in client.get("/admin/").text

        listing = client.get("/admin/accounts/apikey/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', listing.text)[1]
        response = client.post(
            "/admin/accounts/apikey/",
            data={"action": "revoke_keys", "_selected_action": [str(api_key.id)], "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302
        assert "Revoked 1 key(s)." in client.get(response.headers["location"]).text
        assert client.post("/admin/accounts/apikey/", data={"action": "revoke_keys"}).status_code == 403  # no token
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    # the revoked key stops working at once
    assert httpx.get(f"{live}/executions/{api_key.id}", headers=auth(tenant)).status_code == 401
