"""Tracing to Langfuse: off by default (nothing sent, no trace id); on, each execution is one trace
(model calls, tool calls, sub-executions) sent to a local OTLP/HTTP server that stands in for
Langfuse; an unreachable Langfuse changes nothing for the execution. The runtime runs in this process."""

import base64
import gzip
import json
import logging
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agents.models import Agent, Skill
from agents.services import publish_agent_version, publish_skill_version
from executions.models import Execution, ExecutionState
from tests.factories import AgentFactory
from tests.helpers import auth, execute
from workers import tracing
from workers.runtime import run_execution

pytestmark = pytest.mark.django_db

CALCULATOR_NODE = {
    "id": "answer",
    "type": "ai",
    "tools": ["calculator"],
    "model": {
        "provider": "builtin",
        "input_usd_per_million_tokens": 2,
        "output_usd_per_million_tokens": 8,
        "script": [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+3"}}]},
            {"text": "5"},
        ],
    },
}


class LangfuseStandIn:
    """A local HTTP server that records what the SDK sends and answers 200 (as Langfuse's OTLP endpoint)."""

    def __init__(self):
        self.requests = []  # (path, headers, raw body, decompressed body)
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                recorded.append((self.path, {k.lower(): v for k, v in self.headers.items()}, raw, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[dict]:
        """Every span received, decoded from OTLP protobuf: name, trace and parent ids, attributes."""
        spans = []
        for path, _headers, _raw, body in self.requests:
            assert path == "/api/public/otel/v1/traces"
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                            }
                        )
        return spans


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def of_type(spans, observation_type):
    return [s for s in spans if s["attributes"].get("langfuse.observation.type") == observation_type]


@pytest.fixture
def langfuse_server():
    server = LangfuseStandIn()
    yield server
    server.close()


@pytest.fixture
def secret_key():
    return f"sk-lf-{uuid.uuid4().hex}"


@pytest.fixture
def tracing_on(settings, langfuse_server, secret_key):
    settings.LANGFUSE_HOST = langfuse_server.url
    settings.LANGFUSE_PUBLIC_KEY = f"pk-lf-{uuid.uuid4().hex[:12]}"  # the SDK keeps one client per public key
    settings.LANGFUSE_SECRET_KEY = secret_key
    return langfuse_server


def start_agent(client, tenant, nodes, message="what is 2+3?", name="calc"):
    agent = AgentFactory(workspace=tenant.workspace, name=name, workflow={"nodes": nodes})
    response = execute(client, agent, tenant, message, route="execute/stream")
    assert response.status_code == 200
    return Execution.objects.get(agent_version__agent=agent, parent__isnull=True)


def assert_secret_nowhere(server, caplog, secret):
    for _path, _headers, raw, body in server.requests:
        assert secret.encode() not in raw and secret.encode() not in body
    for record in caplog.records:
        assert secret not in record.getMessage() and secret not in str(record.args)


def test_without_the_settings_nothing_is_sent_and_no_trace_id(client, tenant, settings, langfuse_server):
    settings.LANGFUSE_HOST = langfuse_server.url  # a host alone (no keys) leaves tracing off
    settings.LANGFUSE_PUBLIC_KEY = settings.LANGFUSE_SECRET_KEY = ""
    execution = start_agent(client, tenant, [CALCULATOR_NODE])
    assert not tracing.enabled()
    assert run_execution(execution.id) == "completed"
    execution.refresh_from_db()
    assert execution.outputs["text"] == "5"
    assert execution.trace_id == ""
    assert tracing.execution_trace(execution).client is None
    assert langfuse_server.requests == []


def test_an_execution_is_one_trace_with_its_model_calls_and_tool_calls(
    client, tenant, tracing_on, secret_key, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    execution = start_agent(client, tenant, [CALCULATOR_NODE])
    assert run_execution(execution.id) == "completed"  # the attempt flushed: everything has been sent

    execution.refresh_from_db()
    assert execution.trace_id == execution.id.hex and len(execution.trace_id) == 32
    [request] = {(path, headers["authorization"]) for path, headers, _raw, _body in tracing_on.requests}
    assert request[1] == "Basic " + base64.b64encode(f"{settings.LANGFUSE_PUBLIC_KEY}:{secret_key}".encode()).decode()
    spans = tracing_on.spans()
    assert {span["trace_id"] for span in spans} == {execution.trace_id}

    [root] = of_type(spans, "agent")
    assert root["name"] == "attempt 1" and root["parent_id"]  # a root under the trace id's remote parent
    assert root["attributes"]["langfuse.trace.name"] == "agent: calc"
    assert json.loads(root["attributes"]["langfuse.trace.metadata.execution_id"]) == str(execution.id)
    assert json.loads(root["attributes"]["langfuse.observation.input"])["message"] == "what is 2+3?"
    assert json.loads(root["attributes"]["langfuse.observation.output"])["text"] == "5"
    assert json.loads(root["attributes"]["langfuse.observation.metadata.outcome"]) == "completed"

    generations = of_type(spans, "generation")
    assert len(generations) == 2
    for generation in generations:
        attributes = generation["attributes"]
        assert generation["parent_id"] == root["span_id"] and generation["name"] == "answer"
        assert attributes["langfuse.observation.model.name"] == "builtin"
        assert attributes["langfuse.trace.name"] == "agent: calc"  # trace attributes reach every observation
        usage = json.loads(attributes["langfuse.observation.usage_details"])
        assert usage["input"] > 0 and usage["output"] > 0 and usage["total"] == usage["input"] + usage["output"]
        assert json.loads(attributes["langfuse.observation.cost_details"])["total"] > 0
        assert json.loads(attributes["langfuse.observation.input"])[-1]["role"] in ("user", "tool")
    outputs = [g["attributes"]["langfuse.observation.output"] for g in generations]
    assert "5" in outputs  # the answer's text; the first call's output is its tool call
    [with_tool_call] = [json.loads(output) for output in outputs if output != "5"]
    assert with_tool_call["tool_calls"][0]["name"] == "calculator"
    assert with_tool_call["tool_calls"][0]["arguments"] == {"expression": "2+3"}
    assert sum(json.loads(g["attributes"]["langfuse.observation.usage_details"])["total"] for g in generations) == (
        execution.input_tokens + execution.output_tokens
    )

    [tool] = of_type(spans, "tool")
    assert tool["name"] == "calculator" and tool["parent_id"] == root["span_id"]
    assert json.loads(tool["attributes"]["langfuse.observation.input"]) == {"expression": "2+3"}
    assert json.loads(tool["attributes"]["langfuse.observation.output"]) == {"value": 5}
    assert json.loads(tool["attributes"]["langfuse.observation.metadata.outcome"]) == "success"

    assert_secret_nowhere(tracing_on, caplog, secret_key)


def test_a_skill_execution_shows_its_langfuse_trace_id(client, tenant, tracing_on, secret_key, caplog):
    caplog.set_level(logging.DEBUG)
    skill = Skill.objects.create(workspace=tenant.workspace, slug="adder", name="adder")
    publish_skill_version(
        skill,
        {
            "inputs_schema": {"type": "object"},
            "instructions": "Add.",
            "tools": ["calculator"],
            "model": CALCULATOR_NODE["model"],
        },
    )
    created = client.post(
        f"/v1/spaces/{tenant.workspace.id}/skills/adder/executions",
        data={"inputs": {"a": 2}},
        content_type="application/json",
        headers=auth(tenant),
    ).json()["data"]
    assert created["langfuse_trace_id"] is None  # filled when the trace starts
    assert run_execution(created["id"]) == "completed"

    data = client.get(
        f"/v1/spaces/{tenant.workspace.id}/skills/executions/{created['id']}", headers=auth(tenant)
    ).json()["data"]
    assert data["langfuse_trace_id"] == uuid.UUID(created["id"]).hex
    spans = tracing_on.spans()
    assert {span["trace_id"] for span in spans} == {data["langfuse_trace_id"]}
    assert len(of_type(spans, "generation")) == 2 and len(of_type(spans, "tool")) == 1
    assert of_type(spans, "agent")[0]["attributes"]["langfuse.trace.name"] == "skill: adder"
    assert_secret_nowhere(tracing_on, caplog, secret_key)


def test_a_sub_execution_is_linked_and_a_resumed_parent_adds_to_its_trace(client, tenant, tracing_on):
    child_agent = Agent.objects.create(workspace=tenant.workspace, name="child")
    publish_agent_version(
        child_agent,
        {"nodes": [{"id": "reply", "type": "ai", "model": {"provider": "builtin", "reply": "from the child"}}]},
    )
    parent = start_agent(
        client, tenant, [{"id": "delegate", "type": "agent", "agent_id": f"agent:{child_agent.id}"}], name="parent"
    )
    assert run_execution(parent.id) == "suspended"
    child = Execution.objects.get(parent=parent)
    assert run_execution(child.id) == "completed"
    parent.refresh_from_db()
    assert parent.state == ExecutionState.QUEUED  # resumed by its child (dispatched on commit: not in this test)
    assert run_execution(parent.id) == "completed"

    parent.refresh_from_db()
    child.refresh_from_db()
    assert (parent.trace_id, child.trace_id) == (parent.id.hex, child.id.hex)
    spans = tracing_on.spans()
    parent_spans = [s for s in spans if s["trace_id"] == parent.trace_id]
    child_spans = [s for s in spans if s["trace_id"] == child.trace_id]
    assert len(parent_spans) + len(child_spans) == len(spans)

    # the parent: both attempts (the one that started the child, the resumed one) in one trace
    attempts = of_type(parent_spans, "agent")
    assert sorted(a["name"] for a in attempts) == ["attempt 1", "attempt 2"]
    outcomes = {a["name"]: json.loads(a["attributes"]["langfuse.observation.metadata.outcome"]) for a in attempts}
    assert outcomes == {"attempt 1": "suspended", "attempt 2": "completed"}
    [started] = [s for s in parent_spans if s["name"].startswith("sub-execution")]
    assert started["name"] == f"sub-execution agent:{child_agent.id}"
    assert json.loads(started["attributes"]["langfuse.observation.metadata.sub_execution_id"]) == str(child.id)
    assert json.loads(started["attributes"]["langfuse.observation.metadata.sub_trace_id"]) == child.trace_id

    # the child: its own trace, which names its parent
    [child_root] = of_type(child_spans, "agent")
    assert json.loads(child_root["attributes"]["langfuse.trace.metadata.parent_execution_id"]) == str(parent.id)
    assert json.loads(child_root["attributes"]["langfuse.trace.metadata.parent_trace_id"]) == parent.trace_id
    assert len(of_type(child_spans, "generation")) == 1


def test_a_failed_model_call_is_an_error_in_the_trace(client, tenant, tracing_on):
    execution = start_agent(
        client,
        tenant,
        [
            {
                "id": "answer",
                "type": "ai",
                "model": {"provider": "builtin", "reply": "one two three four", "fail": "upstream broke"},
            }
        ],
    )
    assert run_execution(execution.id) == "failed"  # flushed after a failure too
    spans = tracing_on.spans()
    [generation] = of_type(spans, "generation")
    assert generation["attributes"]["langfuse.observation.level"] == "ERROR"
    assert "upstream broke" in generation["attributes"]["langfuse.observation.status_message"]
    [root] = of_type(spans, "agent")
    assert root["attributes"]["langfuse.observation.level"] == "ERROR"
    assert json.loads(root["attributes"]["langfuse.observation.metadata.outcome"]) == "failed"


def test_an_unreachable_langfuse_changes_nothing_for_the_execution(
    client, tenant, settings, monkeypatch, caplog, secret_key
):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.LANGFUSE_HOST = f"http://127.0.0.1:{port}"
    settings.LANGFUSE_PUBLIC_KEY = f"pk-lf-{uuid.uuid4().hex[:12]}"
    settings.LANGFUSE_SECRET_KEY = secret_key
    monkeypatch.setattr(tracing, "EXPORT_TIMEOUT_SECONDS", 1)
    caplog.set_level(logging.DEBUG)

    execution = start_agent(client, tenant, [CALCULATOR_NODE])
    assert run_execution(execution.id) == "completed"
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED and execution.outputs["text"] == "5"
    assert execution.trace_id == execution.id.hex
    assert any(
        record.levelno >= logging.WARNING and "export" in record.getMessage().lower() for record in caplog.records
    )
    for record in caplog.records:
        assert secret_key not in record.getMessage()
