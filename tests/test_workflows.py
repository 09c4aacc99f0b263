"""Workflow nodes through the runtime (in-process; a cancel racing a run on the live worker): every event type of the spec's table, in order."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from agents.models import HttpTool
from executions.models import Execution, ExecutionState
from tests.helpers import auth, execute, execution_uuid, stream, stream_agent, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def types(events):
    return [e.data["type"] for e in events]


def builtin(**options):
    return {"provider": "builtin", **options}


def test_ai_node_streams_reasoning_server_tools_and_text_in_order(api, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "tools": ["calculator"],
            "model": builtin(
                script=[
                    {
                        "reasoning": "I should compute it",
                        "tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}],
                    },
                    {"text": "The answer is 42"},
                ]
            ),
        }
    )
    events = stream_agent(api, agent, tenant, "what is 6 * 7?")
    assert types(events) == [
        "start",
        "node_start",
        "reasoning",
        "tool_call",
        "tool_result",
        "text",
        "node_complete",
        "final",
    ]
    by_type = {e.data["type"]: e.data for e in events}
    assert by_type["reasoning"]["text"] == "I should compute it"
    assert by_type["tool_call"]["name"] == "calculator"
    assert by_type["tool_call"]["arguments"] == {"expression": "6 * 7"}
    assert by_type["tool_result"]["tool_call_id"] == by_type["tool_call"]["tool_call_id"]
    assert by_type["tool_result"]["outcome"] == "success"
    assert by_type["tool_result"]["result"] == {"value": 42}
    assert by_type["final"]["output"]["text"] == "The answer is 42"
    assert by_type["final"]["output"]["usage"]["total_tokens"] > 0
    assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e.id == str(e.data["seq"]) for e in events)


def test_a_failing_tool_is_reported_to_the_model(api, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "tools": ["calculator"],
            "model": builtin(
                script=[
                    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1 / 0"}}]},
                    {"text": "I could not divide"},
                ]
            ),
        }
    )
    events = stream_agent(api, agent, tenant)
    result = next(e.data for e in events if e.data["type"] == "tool_result")
    assert result["outcome"] == "error"
    assert "division" in result["result"]["message"]
    assert events[-1].data["type"] == "final"


@pytest.mark.parametrize(
    "reply, parsed",
    [
        ('{"type": "card", "amount": "$2,450"}', {"type": "card", "amount": "$2,450"}),
        ("not json at all", None),
        ('{"type": "card"}', None),  # parses, but misses a required field
    ],
)
def test_output_schema_gives_parsed_output_or_null(api, tenant, workflow_agent, reply, parsed):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "model": builtin(reply=reply),
            "output_schema": {
                "type": "object",
                "required": ["type", "amount"],
                "properties": {"type": {"type": "string"}, "amount": {"type": "string"}},
            },
        }
    )
    response = execute(api, agent, tenant, "card")
    output = response.json()["data"]["output"]
    assert output["text"] == reply
    assert output["parsed_output"] == parsed


def test_max_iterations_stops_a_tool_loop(api, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "tools": ["current_time"],
            "max_iterations": 3,
            "model": builtin(script=[{"tool_calls": [{"name": "current_time", "arguments": {}}]}]),
        }
    )
    events = stream_agent(api, agent, tenant)
    assert types(events).count("tool_call") == 3
    assert events[-1].data["type"] == "error"
    assert events[-1].data["code"] == "max_iterations_exceeded"


class _ToolHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"order": body["order_id"], "status": "shipped", "token": self.headers.get("X-Token")})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def tool_server():
    server = HTTPServer(("127.0.0.1", 0), _ToolHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_tool_node_calls_a_workspace_http_tool(api, tenant, workflow_agent, tool_server):
    HttpTool.objects.create(
        workspace=tenant.workspace,
        name="order_status",
        url=f"{tool_server}/orders",
        headers={"X-Token": "secret"},
        allow_private_network=True,
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    )
    agent = workflow_agent(
        {"id": "lookup", "type": "tool", "tool": "order_status", "arguments": {"order_id": "{{variables.order}}"}},
        {"id": "answer", "type": "ai", "model": builtin(), "prompt": "Status: {{nodes.lookup.result.status}}"},
    )
    events = stream(
        api,
        "POST",
        f"/agents/{agent.id}/execute/stream",
        auth(tenant),
        {"message": "where is it?", "variables": {"order": "A-17"}},
    )
    assert types(events)[:5] == ["start", "node_start", "tool_call", "tool_result", "node_complete"]
    result = events[3].data
    assert result["outcome"] == "success"
    assert result["result"] == {"order": "A-17", "status": "shipped", "token": "[redacted]"}  # echoed header
    assert events[-1].data["type"] == "final"
    assert "Status: shipped" in events[-1].data["output"]["text"]


def test_a_tool_node_that_fails_fails_the_execution(api, tenant, workflow_agent):
    agent = workflow_agent({"id": "lookup", "type": "tool", "tool": "calculator", "arguments": {"expression": "x"}})
    events = stream_agent(api, agent, tenant)
    assert events[-1].data["type"] == "error"
    assert events[-1].data["code"] == "tool_error"


def test_another_workspaces_http_tool_is_not_callable(api, tenant, other_tenant, workflow_agent, tool_server):
    HttpTool.objects.create(
        workspace=other_tenant.workspace, name="order_status", url=f"{tool_server}/orders", allow_private_network=True
    )
    agent = workflow_agent({"id": "lookup", "type": "tool", "tool": "order_status", "arguments": {"order_id": "1"}})
    events = stream_agent(api, agent, tenant)
    result = next(e.data for e in events if e.data["type"] == "tool_result")
    assert result["outcome"] == "error"
    assert result["result"]["message"] == "Unknown tool 'order_status'."


# --- media generation ------------------------------------------------------------------------------


def test_media_generation_submits_heartbeats_and_completes_with_a_download_url(api, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "image",
            "type": "media_generation",
            "prompt": "a red fox",
            "width": 64,
            "height": 48,
            "duration_ms": 1200,
        }
    )
    events = stream_agent(api, agent, tenant, "draw")
    kinds = types(events)
    assert kinds[:3] == ["start", "node_start", "media_gen_submitted"]
    assert kinds.count("heartbeat") >= 2  # every MEDIA_HEARTBEAT_SECONDS (0.3 s in tests) while waiting
    assert set(kinds[3 : kinds.index("media_gen_complete")]) == {"heartbeat"}
    assert kinds[-3:] == ["media_gen_complete", "node_complete", "final"]
    complete = events[kinds.index("media_gen_complete")].data
    assert complete["content_type"] == "image/png"
    download = api.get(f"{complete['url']}")  # no API key: the link is signed
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert download.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(download.content[16:20], "big") == 64 and int.from_bytes(download.content[20:24], "big") == 48
    assert api.get(f"{complete['url']}x").status_code == 404


# --- sub-executions --------------------------------------------------------------------------------


def test_agent_node_runs_another_agent_as_a_sub_execution(api, tenant, workflow_agent):
    child_agent = workflow_agent({"id": "child", "type": "ai", "model": builtin(reply="from the child")})
    parent_agent = workflow_agent(
        {"id": "delegate", "type": "agent", "agent_id": f"agent:{child_agent.id}", "message": "{{message}}!"},
        {"id": "wrap", "type": "ai", "model": builtin(), "prompt": "Child said: {{nodes.delegate.text}}"},
    )
    response = execute(api, parent_agent, tenant, "go")
    data = response.json()["data"]
    assert data["status"] == "completed"
    assert "Child said: from the child" in data["output"]["text"]
    parent = Execution.objects.get(id=execution_uuid(data["execution_id"]))
    child = Execution.objects.get(parent=parent)
    assert child.source == "sub" and child.state == ExecutionState.COMPLETED
    assert child.inputs["message"] == "go!"
    events = stream(api, "GET", f"/executions/{parent.id}/events", auth(tenant))
    started = next(e.data for e in events if e.data["type"] == "sub_execution_started")
    assert started["sub_execution_id"] == child.public_id


def test_a_failed_sub_execution_fails_the_parent(api, tenant, workflow_agent):
    child_agent = workflow_agent({"id": "child", "type": "ai", "model": builtin(reply="a b c d", fail="child broke")})
    parent_agent = workflow_agent({"id": "delegate", "type": "agent", "agent_id": str(child_agent.id)})
    data = execute(api, parent_agent, tenant, "go").json()["data"]
    assert data["status"] == "failed"
    assert data["error"]["code"] == "sub_execution_failed"


def test_an_agent_node_cannot_reach_another_workspaces_agent(api, tenant, other_tenant, workflow_agent):
    foreign = workflow_agent({"id": "x", "type": "ai", "model": builtin()}, workspace=other_tenant.workspace)
    parent_agent = workflow_agent({"id": "delegate", "type": "agent", "agent_id": str(foreign.id)})
    events = stream_agent(api, parent_agent, tenant)
    assert events[-1].data["code"] == "invalid_workflow"
    assert not Execution.objects.filter(workspace=other_tenant.workspace).exists()


def test_skill_node_runs_the_skill_as_a_sub_execution(api, tenant, workflow_agent):
    from agents.models import Skill
    from agents.services import publish_skill_version

    skill = Skill.objects.create(workspace=tenant.workspace, slug="summarize", name="Summarize")
    publish_skill_version(skill, {"instructions": "Summarize.", "model": builtin(reply="a summary")})
    agent = workflow_agent({"id": "sum", "type": "skill", "skill": "summarize", "inputs": {"text": "{{message}}"}})
    events = stream_agent(api, agent, tenant, "long text")
    assert events[-1].data["type"] == "final"
    assert events[-1].data["output"]["text"] == "a summary"
    child = Execution.objects.get(source="sub")
    assert child.skill_version_id == skill.live_version_id
    assert child.inputs == {"text": "long text"}


def test_cancelling_a_parent_cancels_its_sub_execution(live, tenant, workflow_agent):
    child_agent = workflow_agent(
        {"id": "child", "type": "ai", "model": builtin(chunk_delay_ms=100, reply=" ".join(["w"] * 100))}
    )
    parent_agent = workflow_agent({"id": "delegate", "type": "agent", "agent_id": str(child_agent.id)})
    events = stream_agent(live, parent_agent, tenant, stop=lambda evs: evs[-1].data["type"] == "sub_execution_started")
    parent_id = execution_uuid(events[0].data["execution_id"])
    wait_for(lambda: Execution.objects.filter(parent_id=parent_id, state="running").exists())
    response = httpx.post(f"{live}/executions/{parent_id}/cancel", headers=auth(tenant), timeout=10)
    assert response.status_code == 200
    assert response.json()["data"]["state"] == "cancelled"
    wait_for(lambda: Execution.objects.get(parent_id=parent_id).state == ExecutionState.CANCELLED)
