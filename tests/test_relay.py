"""The SSE relay never silently misses an event, keeps idle streams alive, and ends at the end."""

import asyncio
import threading
import time

import httpx
import pytest
from django.db import connection

from executions import events as event_log
from executions.events import append_event
from executions.models import ExecutionState
from executions.purge import purge_execution
from executions.streaming import close_loop_resources, follow_events
from tests.factories import ExecutionFactory
from tests.helpers import auth

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def suspended_execution(tenant, agent):
    execution = ExecutionFactory(
        agent=agent, principal=tenant.end_user_key.api_key.principal, state=ExecutionState.AWAITING_APPROVAL
    )
    append_event(execution, "start", {"status": "queued"})
    return execution


def collect(execution_id, after=0):
    async def run():
        try:
            return [seq async for seq, _ in _events(execution_id, after)]
        finally:
            await close_loop_resources()

    async def _events(eid, after_seq):
        async for item in follow_events(eid, after_seq, heartbeat=0.5):
            if item is not None:
                yield item

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def test_a_lost_pubsub_message_is_filled_from_the_log(suspended_execution, monkeypatch):
    real_publish = event_log.publish

    def writer():
        try:
            time.sleep(0.5)
            append_event(suspended_execution, "text", {"text": "a"})  # seq 2, published
            monkeypatch.setattr(event_log, "publish", lambda *args: None)
            append_event(suspended_execution, "text", {"text": "b"})  # seq 3, lost on pub/sub
            monkeypatch.setattr(event_log, "publish", real_publish)
            append_event(suspended_execution, "text", {"text": "c"})  # seq 4, reveals the gap
            append_event(suspended_execution, "final", {"status": "completed"})  # seq 5
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    seqs = collect(suspended_execution.id)
    thread.join()
    assert seqs == [1, 2, 3, 4, 5]


def test_a_lost_final_message_is_found_at_the_next_heartbeat(suspended_execution, monkeypatch):
    def writer():
        try:
            time.sleep(0.3)
            monkeypatch.setattr(event_log, "publish", lambda *args: None)
            append_event(suspended_execution, "final", {"status": "completed"})
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    assert collect(suspended_execution.id) == [1, 2]
    thread.join()


def test_idle_stream_gets_heartbeats_then_ends_when_cancelled(live, tenant, suspended_execution):
    url = f"{live}/executions/{suspended_execution.id}/events"
    lines = []
    with httpx.stream("GET", url, headers=auth(tenant), timeout=30) as response:
        for line in response.iter_lines():
            lines.append(line)
            if line == ": heartbeat" and not any("cancel" in seen for seen in lines):
                cancel = httpx.post(f"{live}/executions/{suspended_execution.id}/cancel", headers=auth(tenant))
                assert cancel.status_code == 200
                lines.append("cancel sent")
    assert lines[0] == "id: 1"
    assert ": heartbeat" in lines
    assert lines[-2].startswith("data: ") and '"code": "cancelled"' in lines[-2]
    suspended_execution.refresh_from_db()
    assert suspended_execution.state == ExecutionState.CANCELLED


# --- a purged execution: its log is erased, so its streams end ------------------------------------------


@pytest.fixture
def finished_execution(tenant, agent):
    execution = ExecutionFactory(agent=agent, principal=tenant.end_user_key.api_key.principal, finished=True)
    append_event(execution, "start", {"status": "queued"})
    append_event(execution, "final", {"status": "completed"})
    return execution


def collect_within(execution_id, seconds: float, after=0) -> list:
    """`collect`, but a stream that has not ended within `seconds` fails the test."""

    async def run():
        try:
            return [item[0] async for item in follow_events(execution_id, after, heartbeat=0.3) if item is not None]
        finally:
            await close_loop_resources()

    return asyncio.run(asyncio.wait_for(run(), timeout=seconds))


def test_a_stream_of_a_purged_execution_ends_at_once(finished_execution):
    purge_execution(finished_execution)
    started = time.monotonic()
    assert collect_within(finished_execution.id, 5) == []
    assert time.monotonic() - started < 2


def test_a_stream_open_when_its_execution_is_purged_ends_at_its_next_heartbeat(tenant, agent):
    """A stream that has sent part of the log (here: an execution whose end is not in it yet) when the
    purge erases the rest."""
    execution = ExecutionFactory(agent=agent, principal=tenant.end_user_key.api_key.principal, finished=True)
    append_event(execution, "start", {"status": "queued"})

    def purge_soon():
        try:
            time.sleep(0.5)
            purge_execution(execution)
        finally:
            connection.close()

    thread = threading.Thread(target=purge_soon)
    thread.start()
    assert collect_within(execution.id, 5) == [1]
    thread.join()


def test_the_events_route_of_a_purged_execution_is_a_204(live, tenant, finished_execution):
    """As for a stream resumed past its end: an EventSource stops on a 204 instead of reconnecting."""
    purge_execution(finished_execution)
    url = f"{live}/executions/{finished_execution.id}/events"
    for headers in ({}, {"Last-Event-ID": "1"}, {"Last-Event-ID": "99"}):
        response = httpx.get(url, headers={**auth(tenant), **headers}, timeout=10)
        assert response.status_code == 204 and response.content == b""
