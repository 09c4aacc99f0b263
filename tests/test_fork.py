"""Forks: a new execution from a saved checkpoint of another (POST /executions/{id}/fork, executions/reruns.py).

The checkpoint history (ExecutionCheckpoint, one row per saved checkpoint, seq = the last event it
covers), a fork from the second model turn of a two-turn agent running only that turn, another
model alias, the errors (409 no_checkpoint, 404 across tenants, 403 end-user keys, 422, 400).
"""

import pytest
from django.test import Client

from accounts.models import ModelAlias
from executions import services
from executions.checkpoints import Checkpoint
from executions.models import Execution, ExecutionCheckpoint
from executions.purge import purge_execution
from tests.factories import ExecutionFactory, SkillFactory
from tests.helpers import auth, data_of, event_validator, execute, execution_uuid, post
from workers.providers import builtin

pytestmark = pytest.mark.django_db(transaction=True)

TWO_TURNS = [
    {"text": "Let me compute that.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
    {"text": "The answer is {{last_tool_result.result.value}}."},
]


@pytest.fixture
def two_turn_agent(workflow_agent):
    return workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "tools": ["calculator"],
            "model": {"provider": "builtin", "chunk_delay_ms": 0, "script": TWO_TURNS},
        }
    )


@pytest.fixture
def model_calls(monkeypatch):
    """Every call of the built-in model, with the messages it was given."""
    calls = []
    original = builtin.BuiltinModel.stream

    def counted(self, messages, tools=None):
        calls.append({"options": self.options, "messages": [dict(m) for m in messages]})
        return original(self, messages, tools)

    monkeypatch.setattr(builtin.BuiltinModel, "stream", counted)
    return calls


def events_of(execution_id) -> list[dict]:
    return list(Execution.objects.get(id=execution_id).events.order_by("seq").values_list("data", flat=True))


def fork(api, tenant, execution_id, body, kind="workspace"):
    return post(api, f"/executions/{execution_id}/fork", body, auth(tenant, kind))


@pytest.fixture
def source(api, tenant, two_turn_agent, model_calls):
    """A finished two-turn run: (execution id, its events); the model calls are then forgotten."""
    data = data_of(execute(api, two_turn_agent, tenant, "what is 6 * 7?"))
    assert data["status"] == "completed"
    assert data["output"]["text"] == "The answer is 42."
    execution_id = execution_uuid(data["execution_id"])
    assert len(model_calls) == 2
    model_calls.clear()
    return execution_id, events_of(execution_id)


def test_every_saved_checkpoint_is_kept_with_the_seq_it_covers(source):
    execution_id, events = source
    rows = list(ExecutionCheckpoint.objects.filter(execution_id=execution_id).order_by("seq"))
    tool_result = next(e["seq"] for e in events if e["type"] == "tool_result")
    node_complete = next(e["seq"] for e in events if e["type"] == "node_complete")
    # after the first model turn (its tool's result included), and the final one
    assert [row.seq for row in rows] == [tool_result, node_complete]
    assert [row.data["event_seq"] for row in rows] == [tool_result, node_complete]
    assert rows[0].data["node_state"]["turns"] == 1
    assert Execution.objects.get(id=execution_id).checkpoint == rows[-1].data  # the latest is the row's


def test_a_fork_from_the_second_turn_runs_only_the_second_turn(api, tenant, source, model_calls):
    execution_id, source_events = source
    second_turn = [e for e in source_events if e["type"] == "text"][-1]["seq"]
    checkpoint_seq = next(e["seq"] for e in source_events if e["type"] == "tool_result")

    response = fork(api, tenant, execution_id, {"from_seq": second_turn})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert set(data) == {"execution_id", "status"}
    forked = Execution.objects.get(id=execution_uuid(data["execution_id"]))
    assert data["status"] == forked.state == "completed"

    events = events_of(forked.id)
    assert events[0] == {
        "type": "forked_from",
        "execution_id": f"execution:{forked.id}",
        "seq": 1,
        "status": "queued",
        "agent_id": f"agent:{forked.agent_version.agent_id}",
        "source_execution_id": f"execution:{execution_id}",
        "from_seq": second_turn,
        "checkpoint_seq": checkpoint_seq,
        "model": None,
    }
    # nothing of the first turn: no start, node_start, tool_call or tool_result, only turn 2's text
    assert [e["type"] for e in events] == ["forked_from", "text", "node_complete", "final"]
    assert events[1]["text"] == "The answer is 42."
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert forked.outputs == {"text": "The answer is 42.", "parsed_output": None}
    assert len(model_calls) == 1  # one model call: the second turn, with the first turn's history
    assert [m["role"] for m in model_calls[0]["messages"]] == ["user", "assistant", "tool"]
    # linked to its source; counted from zero (only what it ran)
    assert str(forked.forked_from_id) == execution_id and forked.forked_from_seq == checkpoint_seq
    assert forked.agent_version_id == Execution.objects.get(id=execution_id).agent_version_id
    assert forked.inputs == Execution.objects.get(id=execution_id).inputs
    assert forked.output_tokens == len("The answer is 42.".split())
    assert forked.iteration_count == 1


def test_a_fork_on_another_model_alias(api, tenant, source, model_calls):
    execution_id, source_events = source
    ModelAlias.objects.create(
        workspace=tenant.workspace, alias="other", provider="builtin", options={"reply": "Another model's answer."}
    )
    second_turn = [e for e in source_events if e["type"] == "text"][-1]["seq"]
    data = data_of(fork(api, tenant, f"execution:{execution_id}", {"from_seq": second_turn, "model": "other"}))
    events = events_of(execution_uuid(data["execution_id"]))
    assert events[0]["model"] == "other"
    assert events[-1]["output"]["text"] == "Another model's answer."
    assert [call["options"].get("alias") for call in model_calls] == ["other"]


def test_a_fork_from_before_any_checkpoint_is_a_409(api, tenant, source):
    execution_id, source_events = source
    first_checkpoint = ExecutionCheckpoint.objects.filter(execution_id=execution_id).order_by("seq").first().seq
    response = fork(api, tenant, execution_id, {"from_seq": first_checkpoint - 1})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_checkpoint"
    # at the checkpoint's own seq it starts there: the second turn only
    data = data_of(fork(api, tenant, execution_id, {"from_seq": first_checkpoint}))
    assert [e["type"] for e in events_of(execution_uuid(data["execution_id"]))][:2] == ["forked_from", "text"]
    assert Execution.objects.count() == 2


def test_a_fork_of_a_fork_starts_from_its_first_checkpoint(api, tenant, source, model_calls):
    execution_id, source_events = source
    second_turn = [e for e in source_events if e["type"] == "text"][-1]["seq"]
    first = execution_uuid(data_of(fork(api, tenant, execution_id, {"from_seq": second_turn}))["execution_id"])
    data = data_of(fork(api, tenant, first, {"from_seq": 1}))
    events = events_of(execution_uuid(data["execution_id"]))
    assert events[0]["source_execution_id"] == f"execution:{first}" and events[0]["checkpoint_seq"] == 1
    assert events[-1]["output"]["text"] == "The answer is 42."


def test_fork_errors(api, tenant, other_tenant, source):
    execution_id, _ = source
    cases = [
        (other_tenant, "workspace", {"from_seq": 99}, 404, "not_found"),
        (tenant, "end_user", {"from_seq": 99}, 403, "forbidden"),
        (tenant, "workspace", {}, 400, "from_seq_required"),
        (tenant, "workspace", {"from_seq": -1}, 400, "invalid_from_seq"),
        (tenant, "workspace", {"from_seq": "x"}, 400, "invalid_from_seq"),
        (tenant, "workspace", {"from_seq": 99, "model": "nope"}, 422, "model_not_allowed"),
    ]
    for who, kind, body, status, code in cases:
        response = fork(api, who, execution_id, body, kind)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
    assert fork(api, tenant, "00000000-0000-4000-8000-000000000000", {"from_seq": 1}).status_code == 404
    assert Execution.objects.count() == 1


def test_purge_erases_the_checkpoints_and_a_purged_execution_is_not_forked(api, tenant, source):
    execution_id, _ = source
    purge_execution(Execution.objects.get(id=execution_id))
    assert not ExecutionCheckpoint.objects.filter(execution_id=execution_id).exists()
    response = fork(api, tenant, execution_id, {"from_seq": 99})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "execution_purged"


def test_sub_executions_and_skills_are_not_forked(api, tenant, two_turn_agent):
    parent = ExecutionFactory(agent=two_turn_agent, finished=True)
    child = ExecutionFactory(parent=parent, agent=two_turn_agent, finished=True)
    response = fork(api, tenant, child.id, {"from_seq": 5})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_rerunnable")
    skill_run = ExecutionFactory(skill=SkillFactory(workspace=tenant.workspace), finished=True)
    response = fork(api, tenant, skill_run.id, {"from_seq": 5})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "fork_not_supported")
    assert Execution.objects.count() == 3


def test_a_checkpoint_save_of_a_lost_lease_writes_no_history(tenant, two_turn_agent):
    execution = ExecutionFactory(agent=two_turn_agent, state="running", attempt=2)
    assert not services.save_checkpoint(execution.id, 1, Checkpoint(event_seq=3), input_tokens=5)
    assert not ExecutionCheckpoint.objects.exists()
    assert services.save_checkpoint(execution.id, 2, Checkpoint(event_seq=3), input_tokens=5, resume_input=None)
    row = ExecutionCheckpoint.objects.get()
    execution.refresh_from_db()
    assert (row.seq, row.data, execution.checkpoint, execution.input_tokens) == (3, execution.checkpoint, row.data, 5)


def test_the_fork_route_and_its_event_are_in_the_openapi_document(api, tenant, source):
    document = Client(HTTP_HOST="localhost").get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = document["paths"]["/executions/{execution_id}/fork"]["post"]
    assert {"201", "403", "404", "409", "422"} <= set(operation["responses"])
    assert "ForkedFromEvent" in document["components"]["schemas"]
    execution_id, source_events = source
    data = data_of(fork(api, tenant, execution_id, {"from_seq": source_events[-1]["seq"]}))
    validator = event_validator(document)
    for event in events_of(execution_uuid(data["execution_id"])):
        validator.validate(event)


def test_the_python_client_forks(api, tenant, source):
    from skillrun_client import SkillrunClient
    from skillrun_client.errors import ConflictError

    execution_id, source_events = source
    client = SkillrunClient(
        "http://testserver", tenant.workspace_key.raw_key, str(tenant.workspace.id), transport=api._transport
    )
    result = client.fork_execution(f"execution:{execution_id}", source_events[-1]["seq"])
    assert result.status == "completed"
    assert Execution.objects.get(id=execution_uuid(result.execution_id)).forked_from_id is not None
    with pytest.raises(ConflictError) as raised:
        client.fork_execution(execution_id, 1)
    assert raised.value.code == "no_checkpoint"
