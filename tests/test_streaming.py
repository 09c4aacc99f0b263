"""An execution streams start -> text... -> final through a real worker and a real HTTP server."""

import pytest

from agents.demo import seed_demo
from executions.models import Execution, ExecutionEvent
from tests.helpers import WORDS_20, auth, execution_uuid, read_stream, stream_agent

pytestmark = pytest.mark.django_db(transaction=True)


def test_stream_runs_start_text_final_with_ids_and_seqs(live, tenant, agent):
    events = stream_agent(live, agent, tenant, message="hello")

    types = [e.data["type"] for e in events]
    assert types[0] == "start"
    assert types[-1] == "final"
    assert "text" in types
    assert set(types) <= {"start", "node_start", "text", "node_complete", "final"}
    # every frame has an id: the event's seq, 1, 2, 3, ... and the JSON carries it too
    assert [e.id for e in events] == [str(n) for n in range(1, len(events) + 1)]
    assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))
    execution_id = events[0].data["execution_id"]
    assert execution_id.startswith("execution:")
    assert all(e.data["execution_id"] == execution_id for e in events)

    text = "".join(e.data["text"] for e in events if e.data["type"] == "text")
    assert text == WORDS_20
    final = events[-1].data
    assert final["status"] == "completed"
    assert final["output"]["text"] == WORDS_20
    assert final["output"]["usage"]["output_tokens"] == 20
    assert final["output"]["usage"]["total_tokens"] == final["output"]["usage"]["input_tokens"] + 20
    assert final["cost_microdollars"] == 0
    assert final["latency_ms"] > 0

    execution = Execution.objects.get(id=execution_uuid(execution_id))
    assert execution.state == "completed"
    assert execution.outputs == {"text": WORDS_20, "parsed_output": None}
    assert execution.output_tokens == 20
    assert execution.finished_at and execution.started_at
    # the log holds exactly what was streamed
    logged = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("data", flat=True))
    assert logged == [e.data for e in events]


def test_demo_agent_streams_at_least_ten_text_events_over_a_second(live):
    demo = seed_demo()
    headers = {"X-API-Key": demo["end_user_api_key"], "X-Workspace-Id": f"workspace:{demo['workspace_id']}"}
    events = read_stream("POST", f"{live}/agents/{demo['agent_id']}/execute/stream", headers, {"message": "Hello"})
    texts = [e for e in events if e.data["type"] == "text"]
    assert len(texts) >= 10
    assert texts[-1].at - texts[0].at >= 1.0
    assert events[-1].data["type"] == "final"


def test_fast_model_text_is_coalesced(live, tenant, make_agent):
    """A model with no delay between 400 chunks does not cost 400 event rows."""
    reply = " ".join(f"w{i}" for i in range(400))
    agent = make_agent(tenant.workspace, chunk_delay_ms=0, reply=reply)
    events = stream_agent(live, agent, tenant)
    texts = [e.data["text"] for e in events if e.data["type"] == "text"]
    assert "".join(texts) == reply
    assert len(texts) < 50


def test_sync_execute_returns_the_documented_shape(live, tenant, agent):
    import httpx

    response = httpx.post(f"{live}/agents/{agent.id}/execute", headers=auth(tenant), json={"message": "hi"}, timeout=60)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["execution_id"].startswith("execution:")
    assert data["status"] == "completed"
    assert data["output"]["text"] == WORDS_20
    assert data["output"]["parsed_output"] is None
    assert set(data["output"]["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert data["output"]["cost_microdollars"] == data["cost_microdollars"] == 0  # the spec's place, and top level
    assert isinstance(data["latency_ms"], int) and data["latency_ms"] > 0


def test_failing_model_ends_with_an_error_event(live, tenant, make_agent):
    agent = make_agent(tenant.workspace, reply="one two three four", fail="upstream exploded")
    events = stream_agent(live, agent, tenant)
    assert events[-1].data["type"] == "error"
    assert events[-1].data["status"] == "failed"
    assert events[-1].data["code"] == "provider_error"
    execution = Execution.objects.get(id=execution_uuid(events[0].data["execution_id"]))
    assert execution.state == "failed"
    assert execution.failure_reason == "provider_error"
    assert execution.error["message"] == "upstream exploded"
