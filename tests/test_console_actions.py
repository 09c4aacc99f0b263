"""The operator's actions on one execution in the admin (executions/admin_actions.py), through
Django's test client on executions the in-process runtime really ran: each a confirmation form
(GET) and a POST that acts through the API's services, a 403 for a staff user without the
permission, a 409 page where the state does not allow it, an admin log entry (LogEntry) and, where
it changes the execution, its own events."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client

from executions import services
from executions.admin_actions import available_actions
from executions.models import Execution, ExecutionCheckpoint, ExecutionState
from tests.factories import ExecutionFactory, SkillFactory
from tests.helpers import ANSWERING_SKILL_MANIFEST, auth, data_of, execute, execution_uuid, post, stream

pytestmark = pytest.mark.django_db(transaction=True)


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="executions", codename__in=codenames))
    return User.objects.get(id=user.id)  # without the permission cache


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ops():
    """A superuser: every permission."""
    return User.objects.create_superuser("ops", "ops@example.com", "pw")


@pytest.fixture
def admin(ops):
    return logged_in(ops)


@pytest.fixture
def viewer():
    """Staff who may look at executions and nothing more."""
    return staff("viewer", "view_execution")


@pytest.fixture
def operator():
    """Staff who may act on runs, but neither refund nor purge."""
    return staff("operator", "view_execution", "change_execution")


def url(execution_id, action: str) -> str:
    return f"/admin/executions/execution/{execution_id}/actions/{action}/"


def events(execution_id) -> list[dict]:
    return list(Execution.objects.get(id=execution_id).events.order_by("seq").values_list("data", flat=True))


def state(execution_id) -> str:
    return Execution.objects.get(id=execution_id).state


def log_messages(execution_id) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=str(execution_id), action_flag=CHANGE)
        .order_by("id")
        .values_list("change_message", flat=True)
    )


@pytest.fixture
def gated(api, tenant, workflow_agent):
    """An execution waiting at a human gate before its answer."""
    agent = workflow_agent(
        {"id": "review", "type": "human_gate", "prompt": "Go on?"},
        {"id": "answer", "type": "ai", "model": {"provider": "builtin", "chunk_delay_ms": 0, "reply": "approved!"}},
    )
    data = data_of(execute(api, agent, tenant))
    assert data["status"] == ExecutionState.AWAITING_APPROVAL
    return execution_uuid(data["execution_id"])


def test_approve_a_gate_with_a_comment(api, admin, gated):
    page = admin.get(url(gated, "approve"))
    assert page.status_code == 200
    assert b'name="comment"' in page.content and b"csrfmiddlewaretoken" in page.content
    assert state(gated) == ExecutionState.AWAITING_APPROVAL  # a GET changes nothing

    response = admin.post(url(gated, "approve"), {"comment": "looks right"})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/executions/execution/{gated}/change/"
    assert state(gated) == ExecutionState.COMPLETED  # resumed and run by the in-process runtime
    resumed = next(e for e in events(gated) if e["type"] == "resumed")
    assert resumed["by"] == "admin:ops" and resumed["from_state"] == ExecutionState.AWAITING_APPROVAL
    assert Execution.objects.get(id=gated).outputs["text"] == "approved!"
    assert log_messages(gated) == ["approve: Gate approved: looks right"]
    entry = LogEntry.objects.get(object_id=str(gated))
    assert entry.user.username == "ops" and entry.content_type.model == "execution"


def test_reject_a_gate(api, admin, gated):
    assert admin.post(url(gated, "reject"), {"comment": "no"}).status_code == 302
    execution = Execution.objects.get(id=gated)
    assert execution.state == ExecutionState.FAILED and execution.failure_reason == "approval_rejected"
    assert next(e for e in events(gated) if e["type"] == "resumed")["by"] == "admin:ops"


def test_a_staff_user_without_the_permission_gets_403(api, viewer, operator, gated):
    client = logged_in(viewer)
    for action in ("approve", "reject", "cancel", "retry", "fork", "refund", "purge", "tool-result", "external-event"):
        assert client.get(url(gated, action)).status_code == 403, action
        assert client.post(url(gated, action), {"comment": "x"}).status_code == 403, action
    assert state(gated) == ExecutionState.AWAITING_APPROVAL
    assert available_actions(Execution.objects.get(id=gated), viewer) == []
    # change_execution is not enough to refund or purge
    client = logged_in(operator)
    assert client.get(url(gated, "refund")).status_code == 403
    assert client.get(url(gated, "purge")).status_code == 403
    assert client.get(url(gated, "approve")).status_code == 200
    assert not LogEntry.objects.exists()


def test_an_action_the_state_does_not_allow_is_a_409_page(api, admin, gated):
    response = admin.post(url(gated, "external-event"), {"event": "paid"})
    assert response.status_code == 409
    assert b"not possible" in response.content
    assert state(gated) == ExecutionState.AWAITING_APPROVAL
    assert admin.get(url(gated, "nonsense")).status_code == 404
    assert admin.get(url("00000000-0000-4000-8000-000000000000", "cancel")).status_code == 404
    assert admin.get(url("not-an-id", "cancel")).status_code == 404


def test_available_actions_follow_the_state_and_the_permissions(api, ops, operator, gated):
    execution = Execution.objects.get(id=gated)
    names = [action.name for action in available_actions(execution, ops)]
    assert names == ["cancel", "approve", "reject", "fork"]  # the gate's checkpoint can be forked
    assert all(action.url == url(gated, action.name) for action in available_actions(execution, ops))
    logged_in(ops).post(url(gated, "approve"), {"comment": ""})
    execution.refresh_from_db()
    assert [a.name for a in available_actions(execution, ops)] == ["retry", "fork", "purge"]  # a free run
    assert [a.name for a in available_actions(execution, operator)] == ["retry", "fork"]


def test_cancel(api, admin, gated):
    assert b"Cancel" in admin.get(url(gated, "cancel")).content
    assert admin.post(url(gated, "cancel")).status_code == 302
    assert state(gated) == ExecutionState.CANCELLED
    error = events(gated)[-1]
    assert error["type"] == "error" and error["code"] == "cancelled" and error["by"] == "admin:ops"
    assert log_messages(gated) == ["cancel: Cancelled."]
    assert admin.post(url(gated, "cancel")).status_code == 409  # finished now


def test_a_running_execution_cancelled_by_an_operator_names_them_in_the_workers_error(admin, agent):
    """The worker stops the run later (between steps); its `error` event still says who asked."""
    running = ExecutionFactory(agent=agent, state=ExecutionState.RUNNING, attempt=1, lease_owner="w1")
    assert admin.post(url(running.id, "cancel")).status_code == 302
    assert state(running.id) == ExecutionState.RUNNING  # asked, not done: the worker stops it
    assert services.do_cancel_running_execution(running, 1)
    error = events(running.id)[-1]
    assert error["type"] == "error" and error["code"] == "cancelled" and error["by"] == "admin:ops"


def test_post_an_external_event(api, admin, tenant, workflow_agent, settings):
    agent = workflow_agent({"id": "wait", "type": "wait_event", "event": "payment_received"})
    execution_id = execution_uuid(data_of(execute(api, agent, tenant))["execution_id"])
    page = admin.get(url(execution_id, "external-event"))
    assert b'value="payment_received"' in page.content  # the awaited event, prefilled

    wrong = admin.post(url(execution_id, "external-event"), {"event": "refund_issued", "payload": "{}"})
    assert wrong.status_code == 422 and b"payment_received" in wrong.content
    bad_json = admin.post(url(execution_id, "external-event"), {"event": "payment_received", "payload": "{nope"})
    assert bad_json.status_code == 400
    assert state(execution_id) == ExecutionState.WAITING_FOR_EXTERNAL_EVENT

    settings.TOOL_RESULT_MAX_BYTES = (
        8  # the API's limit on a payload, at its boundary: {"n":33} is 8 bytes, {"n":333} 9
    )
    too_big = admin.post(url(execution_id, "external-event"), {"event": "payment_received", "payload": '{"n": 333}'})
    assert too_big.status_code == 400 and b"At most 8 bytes" in too_big.content
    response = admin.post(url(execution_id, "external-event"), {"event": "payment_received", "payload": '{"n": 33}'})
    assert response.status_code == 302
    execution = Execution.objects.get(id=execution_id)
    assert execution.state == ExecutionState.COMPLETED
    assert next(e for e in events(execution_id) if e["type"] == "resumed")["by"] == "admin:ops"
    assert log_messages(execution_id) == ["external-event: Event 'payment_received' posted."]


def test_answer_the_pending_client_tool_calls(api, admin, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "accepts_client_tools": True,
            "model": {
                "provider": "builtin",
                "chunk_delay_ms": 0,
                "script": [
                    {
                        "text": "Looking.",
                        "tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}],
                    },
                    {"text": "Got {{last_tool_result.result}}."},
                ],
            },
        }
    )
    tools = [{"name": "a", "parameters": {"type": "object"}}, {"name": "b", "parameters": {"type": "object"}}]
    received = stream(
        api, "POST", f"/agents/{agent.id}/execute/stream", auth(tenant), {"message": "hi", "client_tools": tools}
    )
    execution_id = execution_uuid(received[0].data["execution_id"])
    calls = [e.data["tool_call_id"] for e in received if e.data["type"] == "tool_call_awaiting_client"]
    assert len(calls) == 2

    page = admin.get(url(execution_id, "tool-result")).content.decode()
    assert all(f'value="{call}"' in page for call in calls)
    unknown = admin.post(url(execution_id, "tool-result"), {"tool_call_id": "tc_nope", "outcome": "success"})
    assert unknown.status_code == 400  # not one of the choices

    first = admin.post(
        url(execution_id, "tool-result"), {"tool_call_id": calls[0], "outcome": "success", "result": "1"}
    )
    assert first.status_code == 302
    assert state(execution_id) == ExecutionState.AWAITING_CLIENT_TOOL  # one call still pending
    page = admin.get(url(execution_id, "tool-result")).content.decode()
    assert f'value="{calls[0]}"' not in page and f'value="{calls[1]}"' in page

    last = admin.post(
        url(execution_id, "tool-result"), {"tool_call_id": calls[1], "outcome": "success", "result": '"two"'}
    )
    assert last.status_code == 302
    execution = Execution.objects.get(id=execution_id)
    assert execution.state == ExecutionState.COMPLETED and execution.outputs["text"] == "Got two."
    assert next(e for e in events(execution_id) if e["type"] == "resumed")["by"] == "admin:ops"
    assert len(log_messages(execution_id)) == 2


def test_retry_links_both_ways(api, admin, tenant, workflow_agent):
    agent = workflow_agent(
        {"id": "answer", "type": "ai", "model": {"provider": "builtin", "chunk_delay_ms": 0, "fail": "the model broke"}}
    )
    response = execute(api, agent, tenant, "try me", variables={"x": 1})
    failed = Execution.objects.get(id=execution_uuid(response.json()["data"]["execution_id"]))
    assert failed.state == ExecutionState.FAILED
    assert admin.get(url(failed.id, "retry")).status_code == 200

    response = admin.post(url(failed.id, "retry"))
    assert response.status_code == 302
    retry = failed.retries.get()
    assert response["Location"] == f"/admin/executions/execution/{retry.id}/change/"
    assert retry.retry_of_id == failed.id
    assert (retry.agent_version_id, retry.inputs, retry.principal_id, retry.workspace_id) == (
        failed.agent_version_id,
        failed.inputs,
        failed.principal_id,
        failed.workspace_id,
    )
    assert retry.state == ExecutionState.FAILED  # it ran again, from the start
    first = events(retry.id)[0]
    assert first["type"] == "start" and first["retry_of"] == f"execution:{failed.id}"
    assert [e["type"] for e in events(retry.id)][1] == "node_start"
    assert log_messages(failed.id) == [f"retry: Retried as {retry.id}."]
    assert LogEntry.objects.filter(object_id=str(retry.id), action_flag=1).exists()  # ADDITION of the retry


def test_retry_a_skill_execution(api, admin, tenant):
    SkillFactory(workspace=tenant.workspace, slug="report", manifest=ANSWERING_SKILL_MANIFEST)
    response = post(
        api, f"/v1/spaces/{tenant.workspace.id}/skills/report/executions", {"inputs": {"topic": "x"}}, auth(tenant)
    )
    assert response.status_code == 201, response.text
    source = Execution.objects.get(id=response.json()["data"]["id"])
    assert source.state == ExecutionState.COMPLETED
    assert admin.post(url(source.id, "retry")).status_code == 302
    retry = Execution.objects.get(retry_of=source)
    assert (retry.skill_version_id, retry.inputs, retry.model_config, retry.principal_id) == (
        source.skill_version_id,
        source.inputs,
        source.model_config,
        source.principal_id,
    )
    assert retry.state == ExecutionState.COMPLETED and retry.outputs == source.outputs
    assert events(retry.id)[0]["skill_slug"] == "report"
    assert "fork" not in [a.name for a in available_actions(source, User.objects.get(username="ops"))]


def test_unfinished_executions_are_not_retried(admin, tenant, workflow_agent, gated):
    assert admin.post(url(gated, "retry")).status_code == 409
    parent = ExecutionFactory(agent=workflow_agent({"id": "x", "type": "ai"}), finished=True)
    child = ExecutionFactory(parent=parent, finished=True)
    assert admin.post(url(child.id, "retry")).status_code == 409
    assert Execution.objects.filter(retry_of__isnull=False).count() == 0


def test_fork_from_the_timeline_link(api, admin, tenant, workflow_agent):
    agent = workflow_agent(
        {"id": "first", "type": "ai", "model": {"provider": "builtin", "chunk_delay_ms": 0, "reply": "one"}},
        {"id": "second", "type": "ai", "model": {"provider": "builtin", "chunk_delay_ms": 0, "reply": "two"}},
    )
    source_id = execution_uuid(data_of(execute(api, agent, tenant))["execution_id"])
    source_events = events(source_id)
    second_start = next(e["seq"] for e in source_events if e["type"] == "node_start" and e["node_id"] == "second")
    checkpoint = ExecutionCheckpoint.objects.filter(execution_id=source_id, seq__lte=second_start).latest("seq")

    page = admin.get(url(source_id, "fork") + f"?from_seq={second_start}").content.decode()
    assert f'value="{second_start}"' in page and "the execution&#x27;s own model" in page
    none = admin.post(url(source_id, "fork"), {"from_seq": "1", "model": ""})
    assert none.status_code == 409 and b"no checkpoint" in none.content

    response = admin.post(url(source_id, "fork"), {"from_seq": str(second_start), "model": ""})
    assert response.status_code == 302
    forked = Execution.objects.get(forked_from_id=source_id)
    assert response["Location"] == f"/admin/executions/execution/{forked.id}/change/"
    assert forked.forked_from_seq == checkpoint.seq
    fork_events = events(forked.id)
    assert fork_events[0]["type"] == "forked_from" and fork_events[0]["from_seq"] == second_start
    assert [e.get("node_id") for e in fork_events if e["type"] == "node_start"] == ["second"]
    assert forked.state == ExecutionState.COMPLETED and forked.outputs["text"] == "two"
    assert log_messages(source_id) == [f"fork: Forked from event {checkpoint.seq} as {forked.id}."]


def test_purge_one_execution(api, admin, operator, tenant, workflow_agent):
    agent = workflow_agent({"id": "a", "type": "ai", "model": {"provider": "builtin", "chunk_delay_ms": 0}})
    execution_id = execution_uuid(data_of(execute(api, agent, tenant, "secret stuff"))["execution_id"])
    assert logged_in(operator).post(url(execution_id, "purge")).status_code == 403
    assert b"Erase" in admin.get(url(execution_id, "purge")).content

    assert admin.post(url(execution_id, "purge")).status_code == 302
    execution = Execution.objects.get(id=execution_id)
    assert execution.is_purged and execution.inputs == {} and not execution.events.exists()
    assert not ExecutionCheckpoint.objects.filter(execution_id=execution_id).exists()
    assert log_messages(execution_id) == ["purge: Purged: inputs, outputs, events and files erased."]
    assert admin.post(url(execution_id, "purge")).status_code == 409  # purged already


def test_the_bulk_purge_needs_the_purge_permission(api, operator, tenant, workflow_agent):
    agent = workflow_agent({"id": "a", "type": "ai", "model": {"provider": "builtin", "chunk_delay_ms": 0}})
    execution_id = execution_uuid(data_of(execute(api, agent, tenant))["execution_id"])
    client = logged_in(operator)
    response = client.post(
        "/admin/executions/execution/", {"action": "purge_executions", "_selected_action": [str(execution_id)]}
    )
    assert response.status_code == 302  # Django's "No action selected.": it is not one of this user's
    assert not Execution.objects.get(id=execution_id).is_purged
    offered = client.get("/admin/executions/execution/").content.decode()
    assert 'value="cancel_executions"' in offered and 'value="purge_executions"' not in offered
