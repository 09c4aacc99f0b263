"""One run's bad data fails only that run: numbers JSON cannot carry (NaN, infinities) become tool
errors the model sees (core/json.py), and a batch of events the database refuses is written again
run by run (workers/event_writer.py), in a real worker beside healthy runs of another tenant."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.models import HttpTool
from core import json as finite_json
from executions import services
from executions.models import Execution, ExecutionEvent, ExecutionSource, ExecutionState
from tests.factories import AgentFactory, ExecutionFactory
from tests.helpers import execute, execution_uuid, wait_for
from workers.providers import builtin

pytestmark = pytest.mark.django_db(transaction=True)

HEALTHY_REPLY = " ".join(f"h{i:03d}" for i in range(60))


def _start(new_tenant, agent, message: str = "hi"):
    return services.create_execution(
        workspace=new_tenant.workspace,
        principal=new_tenant.end_user_key.api_key.principal,
        source=ExecutionSource.API,
        inputs={"message": message},
        agent_version=agent.live_version,
    ).id


def _start_beside_healthy_runs(tenant, other_tenant, make_agent, poisoned_agent):
    """Ten runs of another tenant streaming (one text event every 20 ms each, ~1.2 s), and the
    poisoned run started while they stream, so that its events share the writer's batches."""
    healthy_agent = make_agent(other_tenant.workspace, chunk_delay_ms=20, reply=HEALTHY_REPLY)
    healthy = [_start(other_tenant, healthy_agent) for _ in range(10)]
    wait_for(lambda: ExecutionEvent.objects.filter(execution_id__in=healthy, type="text").count() >= 30, timeout=30)
    poisoned = _start(tenant, poisoned_agent)
    ended = [ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED]
    wait_for(lambda: Execution.objects.filter(id__in=[*healthy, poisoned], state__in=ended).count() == 11, timeout=60)
    for execution in Execution.objects.filter(id__in=healthy):
        assert execution.state == ExecutionState.COMPLETED, execution.error
        assert execution.outputs["text"] == HEALTHY_REPLY
    return Execution.objects.get(id=poisoned)


def test_an_infinite_tool_result_beside_ten_healthy_runs_is_a_tool_error_and_the_others_complete(
    live, tenant, other_tenant, make_agent, workflow_agent
):
    calls = [{"name": "calculator", "arguments": {"expression": f"1e308*{10 + i}"}} for i in range(20)]
    poisoned_agent = workflow_agent(
        {
            "id": "think",
            "type": "ai",
            "tools": ["calculator"],
            "model": {"provider": "builtin", "script": [{"tool_calls": calls}, {"text": "recovered"}]},
        }
    )
    poisoned = _start_beside_healthy_runs(tenant, other_tenant, make_agent, poisoned_agent)

    assert poisoned.state == ExecutionState.COMPLETED, poisoned.error
    assert poisoned.outputs["text"] == "recovered"
    results = [e.data for e in ExecutionEvent.objects.filter(execution_id=poisoned.id, type="tool_result")]
    assert len(results) == 20
    assert all(r["outcome"] == "error" and "not a finite number" in r["result"]["message"] for r in results)


class _NulHandler(BaseHTTPRequestHandler):
    """Answers JSON whose string holds a NUL: valid JSON, which PostgreSQL's jsonb refuses."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = json.dumps({"value": "before\u0000after"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def nul_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NulHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_batch_the_database_refuses_fails_only_the_run_it_came_from(
    live, tenant, other_tenant, make_agent, workflow_agent, nul_server
):
    HttpTool.objects.create(
        workspace=tenant.workspace,
        name="lookup",
        url=f"http://127.0.0.1:{nul_server.server_port}/",
        allow_private_network=True,
    )
    calls = [{"name": "lookup", "arguments": {"n": i}} for i in range(20)]
    poisoned_agent = workflow_agent(
        {
            "id": "think",
            "type": "ai",
            "tools": ["lookup"],
            "model": {"provider": "builtin", "script": [{"tool_calls": calls}, {"text": "unreachable"}]},
        }
    )
    poisoned = _start_beside_healthy_runs(tenant, other_tenant, make_agent, poisoned_agent)

    assert poisoned.state == ExecutionState.FAILED
    assert poisoned.failure_reason == "internal_error"
    last = ExecutionEvent.objects.filter(execution_id=poisoned.id).order_by("-seq").first()
    assert last.type == "error" and last.data["code"] == "internal_error"


# --- in the test process ----------------------------------------------------------------------------


def _calculator_agent(workflow_agent, expression: str):
    script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}]},
        {"text": "{{last_tool_result}}"},
    ]
    return workflow_agent(
        {"id": "think", "type": "ai", "tools": ["calculator"], "model": {"provider": "builtin", "script": script}}
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9" * 400 + "*1.0", "too large"),  # OverflowError: int too large to convert to float
        ("1e308*10", "not a finite number"),
        ("-(1e308*10) + 1e308*10", "not a finite number"),  # NaN
        ("1/0", "division by zero"),
    ],
)
def test_the_calculator_answers_every_failure_as_a_tool_error(api, tenant, workflow_agent, expression, message):
    agent = _calculator_agent(workflow_agent, expression)
    body = execute(api, agent, tenant).json()
    assert body["data"]["status"] == "completed", body
    answer = json.loads(body["data"]["output"]["text"])
    assert answer["outcome"] == "error" and message in answer["result"]["message"]


def test_model_arguments_holding_nan_are_a_tool_error_the_model_sees(api, tenant, workflow_agent, monkeypatch):
    # a provider that parses NaN, as json.loads does (the providers use core/json.py's loads)
    monkeypatch.setattr(builtin, "_parsed", lambda text: json.loads(text) if isinstance(text, str) else text)
    agent = _calculator_agent(workflow_agent, "{{prompt}}")
    body = execute(api, agent, tenant, message="NaN").json()
    assert body["data"]["status"] == "completed", body
    answer = json.loads(body["data"]["output"]["text"])
    assert answer["outcome"] == "error" and "NaN" in answer["result"]["message"]
    execution_id = execution_uuid(body["data"]["execution_id"])
    call = ExecutionEvent.objects.get(execution_id=execution_id, type="tool_call").data
    assert call["arguments"] == {"_raw": "{'expression': nan}"}


def test_a_model_answer_nan_is_no_parsed_output(api, tenant, workflow_agent):
    """`output_schema` parses the model's text: `NaN` is no JSON, so parsed_output is null."""
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "output_schema": {"type": "number"},
            "model": {"provider": "builtin", "reply": "NaN"},
        }
    )
    body = execute(api, agent, tenant).json()
    assert body["data"]["status"] == "completed"
    assert body["data"]["output"]["parsed_output"] is None


def test_the_encoder_refuses_what_jsonb_refuses():
    for value in (float("nan"), float("inf"), {"a": [1, float("-inf")]}):
        assert not finite_json.is_finite(value)
        with pytest.raises(finite_json.NonFiniteNumber):
            finite_json.dumps(value)
    for text in ("NaN", '{"a": Infinity}', "[1e999]", "-Infinity"):
        with pytest.raises(ValueError):
            finite_json.loads(text)
    assert finite_json.loads('{"a": 1.5e308}') == {"a": 1.5e308}
    assert finite_json.dumps({"a": 1.5}) == '{"a": 1.5}'


def test_an_execution_column_refuses_nan_before_the_database_sees_it(tenant):
    execution = ExecutionFactory(agent=AgentFactory(workspace=tenant.workspace))
    for column in ("outputs", "error", "checkpoint", "resume_input"):
        with pytest.raises(finite_json.NonFiniteNumber):
            Execution.objects.filter(id=execution.id).update(**{column: {"value": float("nan")}})


def test_an_event_of_a_transition_refuses_nan_before_the_database_sees_it(tenant):
    """The API's and the transitions' events (executions/events.py:append_event) use the same encoder."""
    from executions.events import append_event

    execution = ExecutionFactory(agent=AgentFactory(workspace=tenant.workspace))
    with pytest.raises(finite_json.NonFiniteNumber):
        append_event(execution, "final", {"output": {"value": float("inf")}})
    assert not ExecutionEvent.objects.filter(execution_id=execution.id).exists()
