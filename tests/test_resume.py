"""Reconnecting with Last-Event-ID replays exactly the events after it: no gap, no duplicate."""

import httpx
import pytest

from executions.models import ExecutionEvent
from tests.helpers import auth, execution_uuid, read_stream, stream_agent, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def events_url(base, public_id):
    return f"{base}/executions/{public_id}/events"


def logged_events(public_id):
    return list(
        ExecutionEvent.objects.filter(execution_id=execution_uuid(public_id))
        .order_by("seq")
        .values_list("data", flat=True)
    )


def test_reconnect_mid_stream_gives_exactly_the_log(live, tenant, streaming_agent):
    first = stream_agent(live, streaming_agent, tenant, stop=lambda events: len(events) >= 5)
    public_id = first[0].data["execution_id"]
    second = read_stream("GET", events_url(live, public_id), {**auth(tenant), "Last-Event-ID": first[-1].id})

    assert second[0].data["seq"] == first[-1].data["seq"] + 1
    assert second[-1].data["type"] == "final"
    assert [e.data for e in first + second] == logged_events(public_id)


def test_disconnected_client_does_not_cancel_and_can_come_back(live, tenant, streaming_agent):
    first = stream_agent(live, streaming_agent, tenant, stop=lambda events: len(events) >= 3)
    public_id = first[0].data["execution_id"]
    # the execution runs on without anyone listening
    wait_for(lambda: ExecutionEvent.objects.filter(execution_id=execution_uuid(public_id), type="final").exists())
    rest = read_stream("GET", events_url(live, public_id), {**auth(tenant), "Last-Event-ID": first[-1].id})
    assert rest[-1].data["type"] == "final" and rest[-1].data["status"] == "completed"
    assert [e.data for e in first + rest] == logged_events(public_id)


def test_without_last_event_id_the_stream_starts_at_the_first_event(live, tenant, agent):
    events = stream_agent(live, agent, tenant)
    replay = read_stream("GET", events_url(live, events[0].data["execution_id"]), auth(tenant))
    assert [e.data for e in replay] == [e.data for e in events]


def test_query_string_resume_for_eventsource(live, tenant, agent):
    events = stream_agent(live, agent, tenant)
    public_id = events[0].data["execution_id"]
    replay = read_stream("GET", f"{events_url(live, public_id)}?last_event_id=4", auth(tenant))
    assert [e.data["seq"] for e in replay] == list(range(5, len(events) + 1))
    replay = read_stream("GET", f"{events_url(live, public_id)}?lastEventId={len(events) - 1}", auth(tenant))
    assert [e.data["type"] for e in replay] == ["final"]


def test_resume_from_the_final_event_ends_at_once(live, tenant, agent):
    """204, not an empty stream: an EventSource reconnects after every stream's end, and stops on a 204."""
    events = stream_agent(live, agent, tenant)
    public_id = events[0].data["execution_id"]
    with httpx.stream(
        "GET", events_url(live, public_id), headers={**auth(tenant), "Last-Event-ID": events[-1].id}, timeout=10
    ) as response:
        assert response.status_code == 204
        assert response.read() == b""


def test_invalid_last_event_id_is_a_400(live, tenant, agent):
    events = stream_agent(live, agent, tenant)
    response = httpx.get(
        events_url(live, events[0].data["execution_id"]), headers={**auth(tenant), "Last-Event-ID": "abc"}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_last_event_id"


def test_sse_headers_disable_proxy_buffering(live, tenant, agent):
    events = stream_agent(live, agent, tenant)
    with httpx.stream("GET", events_url(live, events[0].data["execution_id"]), headers=auth(tenant), timeout=10) as r:
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["cache-control"] == "no-cache"
        assert "content-encoding" not in r.headers
