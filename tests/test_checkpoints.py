"""The typed checkpoint (executions/checkpoints.py): it round-trips, a checkpoint in the previous
(unversioned) format loads and its execution resumes from it, a skill's `materials_staged` is kept."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import ApiError
from core.ids import uuid7
from executions import resumes, services
from executions.checkpoints import (
    CHECKPOINT_VERSION,
    ApprovalGate,
    Checkpoint,
    CheckpointError,
    EventWait,
    MediaJob,
    ModelTurns,
    SubExecutionWait,
)
from executions.models import Execution, ExecutionSource, ExecutionState
from tests.factories import ExecutionFactory
from tests.helpers import wait_for

CALL = {"id": "tc_1", "name": "lookup", "arguments": {"q": "x"}}
GATE_TIMEOUT = {"decision": "approved", "comment": "", "decided_by": "timeout"}
EVENT_TIMEOUT = {"event": None, "payload": None, "timed_out": True}


def previous(node_state: dict, **fields) -> dict:
    """A checkpoint as the code before the typed checkpoint wrote it (no `version`, no `kind`)."""
    return {
        "next_node": 0,
        "node_outputs": {},
        "event_seq": 2,
        "usage": {"input_tokens": 3, "output_tokens": 4, "cached_input_tokens": 0},
        "cost_usd": "0",
        "node_state": node_state,
        **fields,
    }


@pytest.mark.parametrize(
    "state",
    [
        ModelTurns(node_id="a", messages=[{"role": "user", "content": "hi"}], turns=2, pending=[CALL], waiting=True),
        ModelTurns(node_id="a", messages=[], skill_calls=[{**CALL, "skill": "s"}], sub_execution_id="c1"),
        ApprovalGate(node_id="g", timeout_input=GATE_TIMEOUT, waiting=True),
        EventWait(node_id="e", event="go", timeout_input=EVENT_TIMEOUT, waiting=True),
        MediaJob(node_id="m", job={"job_id": "j1"}, submitted_at=12.5),
        SubExecutionWait(node_id="s", sub_execution_id="c2", waiting=True),
    ],
)
def test_a_checkpoint_round_trips_with_its_version_and_node_state_kind(state):
    checkpoint = Checkpoint(next_node=1, node_outputs={"x": {"text": "t"}}, materials_staged=True, node_state=state)
    stored = checkpoint.to_json()
    assert stored["version"] == CHECKPOINT_VERSION and stored["node_state"]["kind"] == state.kind
    assert Checkpoint.from_json(stored) == checkpoint


@pytest.mark.parametrize(
    "node_state, kind",
    [
        ({"node_id": "a", "messages": [], "turns": 1, "pending": [CALL], "skill_calls": [], "waiting": True}, "ai"),
        ({"node_id": "g", "timeout_input": GATE_TIMEOUT, "waiting": True}, "human_gate"),
        ({"node_id": "e", "event": None, "timeout_input": EVENT_TIMEOUT, "waiting": True}, "wait_event"),
        ({"node_id": "m", "job": {"job_id": "j"}, "submitted_at": 1.0}, "media_generation"),
        ({"node_id": "s", "sub_execution_id": "c", "waiting": True}, "sub_execution"),
    ],
)
def test_a_previous_format_node_state_is_typed_by_its_keys(node_state, kind):
    checkpoint = Checkpoint.from_json(previous(node_state))
    assert checkpoint.node_state.kind == kind
    assert (checkpoint.event_seq, checkpoint.usage["output_tokens"]) == (2, 4)
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint


def test_a_checkpoint_of_a_newer_version_is_refused():
    with pytest.raises(CheckpointError):
        Checkpoint.from_json({"version": CHECKPOINT_VERSION + 1})


# --- resuming from a checkpoint in the previous format ---------------------------------------------


@pytest.fixture
def suspended_in_previous_format(tenant, workflow_agent):
    """An execution suspended by the previous code: its row as that code left it."""

    def make(nodes, state, node_state, **fields):
        return ExecutionFactory(
            agent=workflow_agent(*nodes),
            principal=tenant.end_user_key.api_key.principal,
            inputs={"message": "hi"},
            state=state,
            attempt=1,
            started_at=timezone.now(),
            checkpoint=previous(node_state),
            **fields,
        )

    return make


def completed(execution) -> Execution:
    return wait_for(lambda: Execution.objects.filter(id=execution.id, state=ExecutionState.COMPLETED).first())


THEN = {"id": "then", "type": "ai", "model": {"provider": "builtin", "reply": "done"}}


def test_a_wait_event_in_the_previous_format_resumes(live, suspended_in_previous_format):
    execution = suspended_in_previous_format(
        [{"id": "wait", "type": "wait_event", "event": "go"}, THEN],
        ExecutionState.WAITING_FOR_EXTERNAL_EVENT,
        {"node_id": "wait", "event": "go", "timeout_input": EVENT_TIMEOUT, "waiting": True},
    )
    with pytest.raises(ApiError) as refused:
        resumes.check_post_external_event(execution, "other", {})
    assert refused.value.code == "unexpected_event"
    assert resumes.check_post_external_event(execution, "go", {"n": 1})
    done = completed(execution)
    assert done.checkpoint["node_outputs"]["wait"] == {"event": "go", "payload": {"n": 1}}
    assert done.outputs["text"] == "done" and done.checkpoint["version"] == CHECKPOINT_VERSION


def test_a_human_gate_in_the_previous_format_resumes_at_its_timeout(live, suspended_in_previous_format):
    execution = suspended_in_previous_format(
        [{"id": "gate", "type": "human_gate", "timeout_seconds": 60, "default_decision": "approve"}, THEN],
        ExecutionState.AWAITING_APPROVAL,
        {"node_id": "gate", "timeout_input": GATE_TIMEOUT, "waiting": True},
        resume_deadline=timezone.now() - timedelta(seconds=1),
    )
    assert execution.id in services.resume_timed_out()
    assert completed(execution).checkpoint["node_outputs"]["gate"]["decided_by"] == "timeout"


def test_a_human_gate_in_the_previous_format_resumes_with_a_decision(live, suspended_in_previous_format):
    execution = suspended_in_previous_format(
        [{"id": "gate", "type": "human_gate"}, THEN],
        ExecutionState.AWAITING_APPROVAL,
        {
            "node_id": "gate",
            "timeout_input": {"decision": "rejected", "comment": "", "decided_by": "timeout"},
            "waiting": True,
        },
    )
    assert resumes.check_decide_approval(execution, "approved", "fine", None)
    assert completed(execution).checkpoint["node_outputs"]["gate"]["decision"] == "approved"


def test_client_tool_calls_in_the_previous_format_resume(live, suspended_in_previous_format):
    script = [{"tool_calls": [CALL]}, {"text": "got {{last_tool_result.result.total}}"}]
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
    ]
    execution = suspended_in_previous_format(
        [
            {
                "id": "answer",
                "type": "ai",
                "accepts_client_tools": True,
                "model": {"provider": "builtin", "script": script},
            }
        ],
        ExecutionState.AWAITING_CLIENT_TOOL,
        {"node_id": "answer", "messages": messages, "turns": 1, "pending": [CALL], "skill_calls": [], "waiting": True},
    )
    with pytest.raises(ApiError) as unknown:
        resumes.check_submit_tool_result(execution, "tc_other", "success", {})
    assert unknown.value.code == "tool_call_not_found"
    assert resumes.check_submit_tool_result(execution, "tc_1", "success", {"total": 42})[0]
    assert completed(execution).outputs["text"] == "got 42"


def test_a_sub_execution_wait_in_the_previous_format_resumes_when_the_child_ends(
    live, suspended_in_previous_format, workflow_agent
):
    child_agent = workflow_agent({"id": "c", "type": "ai", "model": {"provider": "builtin", "reply": "from child"}})
    child_id = uuid7()
    parent = suspended_in_previous_format(
        [{"id": "sub", "type": "agent", "agent_id": f"agent:{child_agent.id}"}, THEN],
        ExecutionState.WAITING_FOR_SUB_EXECUTION,
        {"node_id": "sub", "sub_execution_id": str(child_id), "waiting": True},
    )
    services.create_execution(
        id=child_id,
        workspace=parent.workspace,
        principal=parent.principal,
        source=ExecutionSource.SUB,
        inputs={"message": "hi"},
        agent_version=child_agent.live_version,
        parent=parent,
    )
    done = completed(parent)
    assert done.checkpoint["node_outputs"]["sub"]["text"] == "from child"


# --- materials_staged -----------------------------------------------------------------------------


def test_the_checkpoint_after_a_node_keeps_materials_staged(live, tenant, workflow_agent):
    """The checkpoint saved between nodes keeps `materials_staged` (it was rebuilt without it)."""
    execution = ExecutionFactory(
        agent=workflow_agent({"id": "wait", "type": "wait_event"}, THEN),
        principal=tenant.end_user_key.api_key.principal,
        inputs={"message": "hi"},
        state=ExecutionState.WAITING_FOR_EXTERNAL_EVENT,
        attempt=1,
        started_at=timezone.now(),
        checkpoint=previous({"node_id": "wait", "event": None, "waiting": True}, materials_staged=True),
    )
    assert resumes.check_post_external_event(execution, "go", {})
    assert completed(execution).checkpoint["materials_staged"] is True
