"""Many SSE streams of one process share ONE Redis pub/sub connection, and they survive a killed
listener connection, a Redis that drops every client and a PostgreSQL that drops every backend:
each stream still gets every event exactly once, to the end.

The streams run in a background thread's event loop, either as real HTTP clients of the live
uvicorn ("http": the API process's listener) or as `follow_events` generators in this process
("local": this process's listener, the same code without the request path). The test thread writes
events, watches CLIENT LIST and kills connections.
"""

import asyncio
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from executions import streaming
from executions.events import append_event
from executions.models import ExecutionEvent, ExecutionState
from executions.streaming import LOG_READER_APPLICATION_NAME, close_loop_resources, follow_events
from ops import processes
from tests.factories import ExecutionFactory
from tests.helpers import WORDS_20, auth, execution_uuid, stream_agent, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LISTENER_PREFIX = "sse-listener:"
OWN_LISTENER = f"{LISTENER_PREFIX}{os.getpid()}"


# --- streams in a thread --------------------------------------------------------------------------


class Streams:
    """One stream per entry of `execution_ids`, all at once; `seen[i]` is stream i's last seq.

    A context manager: leaving it cancels what is still open, so a failed test leaves no stream
    behind in the API.
    """

    def __init__(self, kind: str, execution_ids: list, base_url: str = "", headers: dict | None = None):
        self.kind, self.execution_ids, self.base_url, self.headers = kind, execution_ids, base_url, headers
        self.seen = [0] * len(execution_ids)
        self.results: list = [None] * len(execution_ids)
        self.loop = asyncio.new_event_loop()
        self.task = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(30)

    def wait_all_at(self, seq: int, timeout: float = 30) -> None:
        wait_for(lambda: min(self.seen) >= seq or self._failures(), timeout=timeout)
        assert not self._failures(), self._failures()[:3]

    def finish(self, timeout: float = 60) -> list[list[dict]]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"streams still open; their last seqs: {sorted(set(self.seen))}"
        assert not self._failures(), self._failures()[:3]
        return self.results

    def _failures(self) -> list:
        return [result for result in self.results if isinstance(result, BaseException)]

    def _run(self):
        self.task = self.loop.create_task(self._main())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    async def _main(self):
        try:
            if self.kind == "http":
                limits = httpx.Limits(max_connections=len(self.execution_ids) + 10, max_keepalive_connections=0)
                async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60, connect=30)) as client:
                    await asyncio.gather(*(self._follow(index, client) for index in range(len(self.execution_ids))))
            else:
                await asyncio.gather(*(self._follow(index) for index in range(len(self.execution_ids))))
        finally:
            await close_loop_resources()

    async def _follow(self, index: int, client=None):
        events = []
        try:
            async for event in self._http_events(index, client) if client else self._local_events(index):
                events.append(event)
                self.seen[index] = event["seq"]
            self.results[index] = events
        except Exception as exc:
            self.results[index] = exc

    async def _http_events(self, index: int, client):
        url = f"{self.base_url}/executions/{self.execution_ids[index]}/events"
        async with client.stream("GET", url, headers=self.headers) as response:
            if response.status_code != 200:
                raise AssertionError(f"{response.status_code}: {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    yield json.loads(line.removeprefix("data: "))

    async def _local_events(self, index: int):
        async for item in follow_events(self.execution_ids[index]):
            if item is not None:
                yield json.loads(item[1])


# --- Redis, PostgreSQL and the log ----------------------------------------------------------------


def redis_admin() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def is_ours(client: dict, kind: str) -> bool:
    """The listener connection of the process that serves the streams of `kind`."""
    if kind == "local":
        return client["name"] == OWN_LISTENER
    return client["name"].startswith(LISTENER_PREFIX) and client["name"] != OWN_LISTENER


def our_listener(admin, kind: str) -> dict:
    """Exactly one connection of that process's listener, subscribed or not."""
    ours = [client for client in admin.client_list() if is_ours(client, kind)]
    assert len(ours) == 1, ours
    return ours[0]


def other_pubsub_ids(admin) -> set:
    return {
        client["id"] for client in admin.client_list(_type="pubsub") if not client["name"].startswith(LISTENER_PREFIX)
    }


def logged(execution_id) -> list[dict]:
    return list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq").values_list("data", flat=True))


def assert_each_got_the_log(streams: Streams, results: list) -> None:
    """Every stream received its execution's whole log: seq 1..N in order, once each, to final."""
    logs = {execution_id: logged(execution_id) for execution_id in set(streams.execution_ids)}
    for execution_id, events in zip(streams.execution_ids, results):
        log = logs[execution_id]
        assert log[-1]["type"] == "final"
        assert [event["seq"] for event in log] == list(range(1, len(log) + 1))
        assert events == log


def terminate_database_backends(application_name: str | None = None) -> int:
    """Every other backend of the test database (or those of one application_name), as a
    PostgreSQL restart would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND (%(name)s::text IS NULL OR application_name = %(name)s)",
            {"name": application_name},
        )
        return cursor.fetchone()[0]


def assert_the_api_pool_recovered(live: str) -> None:
    """One request after another answers at once: the API's Django pool replaced all its killed
    connections at the first broken one (core/pg_backend), instead of meeting them one by one with
    growing pauses (1 s, 2 s, 4 s...: ~30 s of PoolTimeout for a full pool, psycopg/psycopg#711)."""
    size = int(processes.API_ENV["DB_POOL_MAX_SIZE"])
    for _ in range(size):
        assert httpx.get(f"{live}/healthz", timeout=3).status_code == 200
    assert 1 <= len(api_connections()) <= size


def fill_the_api_pool(live: str, tenant, execution) -> None:
    """Requests at once until the API's Django pool holds all its connections (so a restart breaks them all)."""
    size = int(processes.API_ENV["DB_POOL_MAX_SIZE"])
    url = f"{live}/executions/{execution.id}"
    with ThreadPoolExecutor(4 * size) as executor:
        wait_for(
            lambda: (
                list(executor.map(lambda _: httpx.get(url, headers=auth(tenant), timeout=10), range(8 * size)))
                and len(api_connections()) >= size - 2
            ),
            timeout=20,
        )


def api_connections() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [processes.API_ENV["DB_APPLICATION_NAME"]],
        )
        return [row[0] for row in cursor.fetchall()]


def log_reader_connections() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [LOG_READER_APPLICATION_NAME],
        )
        return [row[0] for row in cursor.fetchall()]


# --- executions -----------------------------------------------------------------------------------


@pytest.fixture
def waiting_execution(tenant, agent):
    """An execution awaiting approval: no worker runs it, so the test writes its events itself."""

    def make():
        execution = ExecutionFactory(
            agent=agent, principal=tenant.end_user_key.api_key.principal, state=ExecutionState.AWAITING_APPROVAL
        )
        append_event(execution, "start", {"status": "queued"})
        return execution

    return make


def write_texts(executions, count: int, pause: float = 0.02) -> None:
    for index in range(count):
        for execution in executions:
            append_event(execution, "text", {"text": f"t{index} "})
        time.sleep(pause)


def write_finals(executions) -> None:
    for execution in executions:
        append_event(execution, "final", {"status": "completed"})


def start_execution(live, tenant, agent):
    """Start an execution without following it: the execute/stream call is closed after `start`."""
    with httpx.stream(
        "POST", f"{live}/agents/{agent.id}/execute/stream", headers=auth(tenant), json={"message": "hi"}, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                return execution_uuid(json.loads(line.removeprefix("data: "))["execution_id"])
    raise AssertionError("no start event")


def spread(executions, streams: int) -> list:
    """`streams` execution ids, round robin over `executions`."""
    return [executions[index % len(executions)].id for index in range(streams)]


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "http"])
def test_200_streams_share_one_pubsub_connection(live, tenant, make_agent, kind):
    """10 slowly streaming executions (3 s each, two at a time on the test worker), 20 streams
    each, all open at once: one pub/sub connection, and each stream gets its whole log."""
    agent = make_agent(tenant.workspace, chunk_delay_ms=150, reply=WORDS_20)
    admin = redis_admin()
    others_before = other_pubsub_ids(admin)
    executions = [start_execution(live, tenant, agent) for _ in range(10)]
    ids = [execution_id for execution_id in executions for _ in range(20)]
    with Streams(kind, ids, live, auth(tenant)) as streams:
        streams.wait_all_at(1, timeout=20)  # every stream is open and past its first log read

        listener = our_listener(admin, kind)
        assert "P" in listener["flags"] and 1 <= int(listener["sub"]) <= 10, listener
        assert other_pubsub_ids(admin) <= others_before  # no pub/sub connection per stream

        results = streams.finish(timeout=60)
    assert_each_got_the_log(streams, results)
    # the last streams unsubscribed (over HTTP the listener stays, idle; here it closed with the loop)
    wait_for(lambda: not [c for c in admin.client_list(_type="pubsub") if is_ours(c, kind)], timeout=10)


@pytest.mark.parametrize("kind, count", [("local", 100), ("http", 8)])
def test_a_killed_listener_connection_is_replaced_and_nothing_is_lost(live, tenant, waiting_execution, kind, count):
    """(Over HTTP as many streams as the API's Django pool lets open today.)"""
    executions = [waiting_execution(), waiting_execution()]
    admin = redis_admin()
    with Streams(kind, spread(executions, count), live, auth(tenant)) as streams:
        streams.wait_all_at(1)
        write_texts(executions, 5)
        streams.wait_all_at(6)  # live

        killed = our_listener(admin, kind)
        assert admin.client_kill_filter(_id=killed["id"]) == 1
        write_texts(executions, 5)  # published while the listener is down or resubscribing

        def replaced_and_subscribed_again():
            listener = our_listener(admin, kind)
            return listener["id"] != killed["id"] and listener["sub"] == "2"

        wait_for(replaced_and_subscribed_again, timeout=10)
        write_texts(executions, 5)
        write_finals(executions)
        results = streams.finish(timeout=30)
    assert_each_got_the_log(streams, results)
    assert all(len(events) == 17 for events in results)


def stream_through_every_connection_dropped(kind: str, count: int, live, tenant, executions) -> list:
    """`count` streams over `executions`; mid-stream Redis drops every client (the worker's and the
    API's too; not the admin connection that asks: skipme) and PostgreSQL every backend of the test
    database but the one that asks (the log readers', the API's, the worker's); then the rest of
    the events. Returns what the streams received."""
    admin = redis_admin()
    with Streams(kind, spread(executions, count), live, auth(tenant)) as streams:
        streams.wait_all_at(1, timeout=20)
        write_texts(executions, 3)
        streams.wait_all_at(4)

        fill_the_api_pool(live, tenant, executions[0])
        admin.client_kill_filter(_type="normal")
        admin.client_kill_filter(_type="pubsub")
        assert terminate_database_backends() >= 1
        write_texts(executions, 3)
        write_finals(executions)
        results = streams.finish(timeout=45)
    assert_each_got_the_log(streams, results)
    assert_the_api_pool_recovered(live)
    return results


@pytest.mark.parametrize(
    "kind, count",
    [
        ("local", 100),
        ("http", 8),
        ("http", 100),
    ],
)
def test_streams_survive_redis_and_postgres_dropping_every_connection(live, tenant, waiting_execution, kind, count):
    executions = [waiting_execution() for _ in range(4)]
    results = stream_through_every_connection_dropped(kind, count, live, tenant, executions)
    assert all(len(events) == 8 for events in results)
    if kind == "http":
        # the API's log pool replaced its killed connections, and holds no more than its size, all idle
        states = log_reader_connections()
        assert 1 <= len(states) <= settings.SSE_DB_POOL_SIZE and set(states) == {"idle"}, states


def test_new_executions_run_after_every_connection_was_dropped(live, tenant, agent, waiting_execution):
    stream_through_every_connection_dropped("local", 8, live, tenant, [waiting_execution(), waiting_execution()])
    events = stream_agent(live, agent, tenant)  # the API, Redis, the worker and PostgreSQL work again
    assert events[-1].data["type"] == "final" and events[-1].data["status"] == "completed"
    assert "".join(e.data["text"] for e in events if e.data["type"] == "text") == WORDS_20


def test_a_full_log_pool_recovers_at_once_after_postgres_dropped_it():
    """After a restart every idle connection of the pool is broken; without checking them all at
    once, the pool tries them one by one with growing pauses: about 30 s for 10."""

    async def fill_the_pool():
        async def hold():
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(0.2)")

        pool = await streaming._pool()
        await asyncio.gather(*(hold() for _ in range(settings.SSE_DB_POOL_SIZE)))
        return pool

    async def timed_read():
        started = time.monotonic()
        assert await streaming.read_log(uuid.uuid4(), 0) == []
        return time.monotonic() - started

    loop = asyncio.new_event_loop()
    try:
        pool = loop.run_until_complete(fill_the_pool())
        assert pool.get_stats()["pool_available"] == settings.SSE_DB_POOL_SIZE
        assert terminate_database_backends(LOG_READER_APPLICATION_NAME) >= settings.SSE_DB_POOL_SIZE
        assert loop.run_until_complete(timed_read()) < 3
    finally:
        loop.run_until_complete(streaming.close_loop_resources())
        loop.close()


class LoopThread:
    """An event loop in a thread of its own, so the test thread can write events meanwhile."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.run(close_loop_resources())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_subscriptions_are_counted_per_channel_and_a_closed_stream_leaves_nothing(waiting_execution):
    first, second = waiting_execution(), waiting_execution()
    admin, loop = redis_admin(), LoopThread()

    async def open_stream(execution):
        stream = follow_events(execution.id)
        assert json.loads((await anext(stream))[1])["seq"] == 1  # subscribed, log read
        return stream

    def inboxes() -> dict:
        return {name: len(channel.inboxes) for name, channel in streaming._listeners[loop.loop].channels.items()}

    try:
        a1, a2, a3, b1 = (loop.run(open_stream(execution)) for execution in (first, first, first, second))
        assert sorted(inboxes().values()) == [1, 3]
        assert our_listener(admin, "local")["sub"] == "2"

        loop.run(a1.aclose())  # a client that went away
        cancelled = asyncio.run_coroutine_threadsafe(anext(a2), loop.loop)
        time.sleep(0.1)
        cancelled.cancel()  # a stream cancelled while it waits
        wait_for(lambda: sorted(inboxes().values()) == [1, 1])
        assert our_listener(admin, "local")["sub"] == "2"  # a3 still follows the first execution

        loop.run(a3.aclose())  # the last stream of a channel unsubscribes
        wait_for(lambda: our_listener(admin, "local")["sub"] == "1" and len(inboxes()) == 1)
        loop.run(b1.aclose())
        wait_for(lambda: our_listener(admin, "local")["sub"] == "0" and inboxes() == {})
    finally:
        loop.close()


def test_a_slow_stream_holds_at_most_its_inbox_limit_and_still_gets_everything(waiting_execution):
    execution, loop = waiting_execution(), LoopThread()

    async def take_first(stream):
        return json.loads((await anext(stream))[1])["seq"]

    async def take_rest(stream):
        return [json.loads(data)["seq"] async for item in stream if item is not None for _, data in [item]]

    def buffered() -> int:
        channel = streaming._listeners[loop.loop].channels[f"execution-events:{execution.id}"]
        return max(len(inbox.messages) for inbox in channel.inboxes)

    try:
        stream = follow_events(execution.id)
        assert loop.run(take_first(stream)) == 1
        write_texts([execution], 3 * streaming.INBOX_LIMIT, pause=0)  # the stream reads none of them meanwhile
        write_finals([execution])
        assert buffered() <= streaming.INBOX_LIMIT
        assert loop.run(take_rest(stream)) == list(range(2, 3 * streaming.INBOX_LIMIT + 3))
    finally:
        loop.close()
