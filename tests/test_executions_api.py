"""The Executions query API (spec/executions-api.txt): list, detail, nestings, purge, retention."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from executions.events import append_event
from executions.models import Artifact, Execution, ExecutionEvent, ExecutionSource, ExecutionState
from files.models import FilePurpose, StoredFile
from tests.factories import ExecutionFactory, SkillFactory

pytestmark = pytest.mark.django_db

SPEC_FIELDS = {
    "createdAt",
    "id",
    "updatedAt",
    "creditsUsed",
    "detail",
    "endedAt",
    "isAgentic",
    "isPurged",
    "parentId",
    "responderId",
    "startedAt",
    "status",
    "workspaceId",
}
STATUSES = [
    "queued",
    "running",
    "awaiting_client_tool",
    "awaiting_approval",
    "waiting_for_external_event",
    "waiting_for_sub_execution",
    "completed",
    "failed",
    "cancelled",
]


def key_headers(new_tenant, kind="workspace") -> dict:
    """The spec's header: a bare `authorization: <key>`."""
    key = new_tenant.workspace_key if kind == "workspace" else new_tenant.end_user_key
    return {"Authorization": key.raw_key}


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def skill(tenant):
    return SkillFactory(workspace=tenant.workspace, slug="report", name="Report")


def make(new_tenant, responder=None, principal=None, **fields) -> Execution:
    """An execution of an agent (or a skill) in the tenant's workspace, by its service principal by default."""
    from agents.models import Agent

    if responder is not None:
        fields["agent" if isinstance(responder, Agent) else "skill"] = responder
    fields.setdefault("source", ExecutionSource.API)
    return ExecutionFactory(
        workspace=new_tenant.workspace, principal=principal or new_tenant.workspace_key.api_key.principal, **fields
    )


def error_of(response) -> dict:
    return response.json()["error"]


# --- detail ---------------------------------------------------------------------------------------------


def test_detail_has_every_documented_field(client, tenant, agent):
    parent = make(tenant, agent, finished=True)
    execution = make(
        tenant,
        agent,
        parent=parent,
        inputs={"message": "hi"},
        outputs={"text": "hello"},
        input_tokens=12,
        output_tokens=30,
        cost_usd=Decimal("0.0042"),
        credits=Decimal("2.5"),
        wallclock_ms=1234,
        iteration_count=2,
        finished=True,
    )
    response = client.get(f"/api/v1/executions/{execution.id}", headers=key_headers(tenant))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == SPEC_FIELDS
    execution.refresh_from_db()
    assert body["id"] == str(execution.id)
    assert body["createdAt"] == execution.created_at.isoformat().replace("+00:00", "Z")
    assert body["updatedAt"] == execution.updated_at.isoformat().replace("+00:00", "Z")
    assert body["startedAt"] == execution.started_at.isoformat().replace("+00:00", "Z")
    assert body["endedAt"] == execution.finished_at.isoformat().replace("+00:00", "Z")
    assert body["creditsUsed"] == 2.5
    assert body["isAgentic"] is True and body["isPurged"] is False
    assert body["parentId"] == str(parent.id)
    assert body["responderId"] == str(agent.id)
    assert body["status"] == "completed"
    assert body["workspaceId"] == str(tenant.workspace.id)
    detail = body["detail"]
    assert detail["type"] == "agent"
    assert detail["agentId"] == str(agent.id)
    assert detail["agentVersionId"] == str(agent.live_version.id)
    assert detail["versionNumber"] == agent.live_version.number
    assert detail["source"] == "api"
    assert detail["inputs"] == {"message": "hi"} and detail["outputs"] == {"text": "hello"}
    assert detail["usage"] == {
        "inputTokens": 12,
        "outputTokens": 30,
        "totalTokens": 42,
        "costUsd": 0.0042,
        "wallclockMs": 1234,
        "iterationCount": 2,
    }
    # the agents API's prefixed id works too
    assert client.get(f"/api/v1/executions/execution:{execution.id}", headers=key_headers(tenant)).json()["id"] == str(
        execution.id
    )


def test_detail_variants_skill_and_batch_item(client, tenant, agent, skill):
    skill_execution = make(
        tenant,
        skill,
        source=ExecutionSource.CHAT,
        chat_message_id="execution:abc",
        chat_tool_call_id="tc_1",
        chat_thread_id="thread-1",
    )
    body = client.get(f"/api/v1/executions/{skill_execution.id}", headers=key_headers(tenant)).json()
    assert body["isAgentic"] is False
    assert body["responderId"] == str(skill.id)
    assert body["detail"]["type"] == "skill"
    assert body["detail"]["skillId"] == str(skill.id) and body["detail"]["skillSlug"] == "report"
    assert body["detail"]["skillVersionId"] == str(skill.live_version.id)
    assert (body["detail"]["chatMessageId"], body["detail"]["chatToolCallId"], body["detail"]["chatThreadId"]) == (
        "execution:abc",
        "tc_1",
        "thread-1",
    )

    batch = make(tenant, agent, source=ExecutionSource.BATCH, state=ExecutionState.WAITING_FOR_SUB_EXECUTION)
    item = make(tenant, agent, source=ExecutionSource.BATCH_ITEM, parent=batch, batch_key="row-7")
    body = client.get(f"/api/v1/executions/{item.id}", headers=key_headers(tenant)).json()
    assert body["detail"]["type"] == "batch_item"
    assert body["detail"]["batchId"] == str(batch.id) and body["detail"]["key"] == "row-7"
    assert body["detail"]["agentId"] == str(agent.id)
    assert body["parentId"] == str(batch.id)
    # a queued execution has not started: startedAt is when it was created, endedAt is null
    assert body["status"] == "queued" and body["endedAt"] is None and body["startedAt"] == body["createdAt"]
    batch_body = client.get(f"/api/v1/executions/{batch.id}", headers=key_headers(tenant)).json()
    assert (batch_body["detail"]["type"], batch_body["detail"]["source"]) == ("agent", "batch")
    assert batch_body["status"] == "waiting_for_sub_execution"


def test_unknown_and_malformed_ids_are_404(client, tenant):
    for execution_id in (uuid.uuid4(), "not-a-uuid"):
        response = client.get(f"/api/v1/executions/{execution_id}", headers=key_headers(tenant))
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("header", ["bare", "bearer", "x-api-key"])
def test_every_key_header_form_works(client, tenant, agent, header):
    execution = make(tenant, agent)
    raw = tenant.workspace_key.raw_key
    headers = {
        "bare": {"Authorization": raw},
        "bearer": {"Authorization": f"Bearer {raw}"},
        "x-api-key": {"X-API-Key": raw},
    }[header]
    assert client.get(f"/api/v1/executions/{execution.id}", headers=headers).status_code == 200
    assert client.get("/api/v1/executions", headers=headers).status_code == 200


def test_without_a_key_every_route_is_401(client, tenant, agent):
    execution = make(tenant, agent)
    for response in (
        client.get("/api/v1/executions"),
        client.get(f"/api/v1/executions/{execution.id}"),
        client.get("/api/v1/executions/nestings", {"executionId": str(execution.id)}),
        client.post(f"/api/v1/executions/{execution.id}/purge"),
    ):
        assert response.status_code == 401
        assert error_of(response)["code"] == "authentication_required"


# --- list ---------------------------------------------------------------------------------------------


@pytest.fixture
def many(tenant, agent):
    """23 executions, created one second apart: the newest is the last one."""
    start = timezone.now() - timedelta(hours=1)
    executions = [make(tenant, agent) for _ in range(23)]
    for index, execution in enumerate(executions):
        Execution.objects.filter(id=execution.id).update(created_at=start + timedelta(seconds=index))
    return [str(e.id) for e in reversed(executions)]  # newest first


def test_list_is_newest_first_with_default_paging_and_the_totals(client, tenant, many):
    response = client.get("/api/v1/executions", headers=key_headers(tenant))
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list) and [e["id"] for e in body] == many[:10]
    assert all(set(e) == SPEC_FIELDS for e in body)
    assert (response["X-Total-Count"], response["X-Total-Pages"]) == ("23", "3")
    assert (response["X-Page-Number"], response["X-Page-Size"]) == ("1", "10")
    assert 'rel="next"' in response["Link"] and "pageNumber=2" in response["Link"]
    assert 'rel="prev"' not in response["Link"]

    third = client.get("/api/v1/executions", {"pageNumber": 3}, headers=key_headers(tenant))
    assert [e["id"] for e in third.json()] == many[20:]
    assert 'rel="next"' not in third["Link"] and 'rel="prev"' in third["Link"]
    past_the_end = client.get("/api/v1/executions", {"pageNumber": 4}, headers=key_headers(tenant))
    assert past_the_end.status_code == 200 and past_the_end.json() == []
    assert past_the_end["X-Total-Count"] == "23"

    pages_of_5 = client.get("/api/v1/executions", {"pageNumber": 2, "pageSize": 5}, headers=key_headers(tenant))
    assert [e["id"] for e in pages_of_5.json()] == many[5:10]
    assert (pages_of_5["X-Total-Pages"], pages_of_5["X-Page-Size"]) == ("5", "5")


def test_page_size_boundaries(client, tenant, many):
    for size in ("1", "100"):
        response = client.get("/api/v1/executions", {"pageSize": size}, headers=key_headers(tenant))
        assert response.status_code == 200
        assert len(response.json()) == min(int(size), 23)
    for size in ("101", "0", "-1", "abc", "1.5", ""):
        response = client.get("/api/v1/executions", {"pageSize": size}, headers=key_headers(tenant))
        assert response.status_code == 400, size
        assert error_of(response)["code"] == "invalid_page_size"
        assert error_of(response)["field"] == "pageSize"


def test_page_number_boundaries(client, tenant, many):
    assert client.get("/api/v1/executions", {"pageNumber": "1"}, headers=key_headers(tenant)).status_code == 200
    for number in ("0", "-1", "x", "2.0"):
        response = client.get("/api/v1/executions", {"pageNumber": number}, headers=key_headers(tenant))
        assert response.status_code == 400, number
        assert (error_of(response)["code"], error_of(response)["field"]) == ("invalid_page_number", "pageNumber")


def test_responder_ids_single_and_array(client, tenant, agent, make_agent, skill):
    other_agent = make_agent(tenant.workspace)
    by_agent = make(tenant, agent)
    by_other = make(tenant, other_agent)
    by_skill = make(tenant, skill)

    def ids(query):
        response = client.get(f"/api/v1/executions?{query}", headers=key_headers(tenant))
        assert response.status_code == 200, response.content
        return {e["id"] for e in response.json()}

    assert ids("") == {str(by_agent.id), str(by_other.id), str(by_skill.id)}
    assert ids(f"responderIds={agent.id}") == {str(by_agent.id)}
    assert ids(f"responderIds={skill.id}") == {str(by_skill.id)}
    both = {str(by_agent.id), str(by_skill.id)}
    assert ids(f"responderIds={agent.id}&responderIds={skill.id}") == both
    assert ids(f"responderIds={agent.id},{skill.id}") == both
    assert ids(f"responderIds[]={agent.id}&responderIds[]={skill.id}") == both
    assert ids(f"responderIds={uuid.uuid4()}") == set()
    response = client.get(f"/api/v1/executions?responderIds={agent.id}", headers=key_headers(tenant))
    assert response["X-Total-Count"] == "1"
    for bad in ("nope", f"{agent.id},nope"):
        response = client.get("/api/v1/executions", {"responderIds": bad}, headers=key_headers(tenant))
        assert response.status_code == 400
        assert (error_of(response)["code"], error_of(response)["field"]) == ("invalid_responder_ids", "responderIds")


def test_end_user_keys_list_and_read_their_own(client, tenant, agent):
    mine = make(tenant, agent, principal=tenant.end_user_key.api_key.principal)
    service = make(tenant, agent)
    response = client.get("/api/v1/executions", headers=key_headers(tenant, "end_user"))
    assert [e["id"] for e in response.json()] == [str(mine.id)]
    assert response["X-Total-Count"] == "1"
    assert client.get(f"/api/v1/executions/{mine.id}", headers=key_headers(tenant, "end_user")).status_code == 200
    assert client.get(f"/api/v1/executions/{service.id}", headers=key_headers(tenant, "end_user")).status_code == 404
    # the workspace key sees both
    response = client.get("/api/v1/executions", headers=key_headers(tenant))
    assert {e["id"] for e in response.json()} == {str(mine.id), str(service.id)}


# --- nestings -----------------------------------------------------------------------------------------


def three_levels(new_tenant, agent, skill, **root_fields):
    """root -> (skill child -> grandchild, agent child), created in that order."""
    root = make(new_tenant, agent, **root_fields)
    first = make(new_tenant, skill, parent=root, source=ExecutionSource.SUB)
    second = make(new_tenant, agent, parent=root, source=ExecutionSource.SUB)
    grandchild = make(new_tenant, agent, parent=first, source=ExecutionSource.SUB)
    return root, first, second, grandchild


def shape(node) -> tuple:
    return node["id"], [shape(child) for child in node["children"]]


def warm_up(client, new_tenant):
    """Authenticate once, so later requests do not also refresh the key's last_used_at."""
    assert client.get("/api/v1/executions", {"pageSize": 1}, headers=key_headers(new_tenant)).status_code == 200


def test_nestings_by_execution_id_in_a_fixed_number_of_queries(client, tenant, agent, skill, django_assert_num_queries):
    root, first, second, grandchild = three_levels(tenant, agent, skill)
    warm_up(client, tenant)
    with django_assert_num_queries(2):  # the API key, then the whole tree in one recursive query
        response = client.get("/api/v1/executions/nestings", {"executionId": str(root.id)}, headers=key_headers(tenant))
    assert response.status_code == 200
    body = response.json()
    assert shape(body) == (str(root.id), [(str(first.id), [(str(grandchild.id), [])]), (str(second.id), [])])
    assert set(body) == SPEC_FIELDS | {"children"}
    assert body["children"][0]["detail"]["type"] == "skill"
    assert body["children"][0]["children"][0]["parentId"] == str(first.id)

    # a bigger, deeper tree costs the same
    for _ in range(3):
        parent = make(tenant, agent, parent=grandchild, source=ExecutionSource.SUB)
        make(tenant, skill, parent=parent, source=ExecutionSource.SUB)
        grandchild = parent
    with django_assert_num_queries(2):
        response = client.get("/api/v1/executions/nestings", {"executionId": str(root.id)}, headers=key_headers(tenant))

    def depth(node):
        return 1 + max((depth(child) for child in node["children"]), default=0)

    assert depth(response.json()) == 7  # root, first, grandchild, 3 new levels and their skill leaves

    # a subtree, and the prefixed id
    response = client.get(
        "/api/v1/executions/nestings", {"executionId": f"execution:{first.id}"}, headers=key_headers(tenant)
    )
    assert response.json()["id"] == str(first.id)
    assert response.json()["children"][0]["children"][0]["parentId"] == response.json()["children"][0]["id"]


def test_nestings_by_chat_message_id_in_a_fixed_number_of_queries(
    client, tenant, agent, skill, django_assert_num_queries
):
    root, first, second, grandchild = three_levels(tenant, agent, skill, chat_message_id="msg_42")
    warm_up(client, tenant)
    with django_assert_num_queries(3):  # the API key, the executions of the message, the tree
        response = client.get("/api/v1/executions/nestings", {"chatMessageId": "msg_42"}, headers=key_headers(tenant))
    assert response.status_code == 200
    assert shape(response.json()) == (str(root.id), [(str(first.id), [(str(grandchild.id), [])]), (str(second.id), [])])


def test_nestings_by_chat_message_id_of_a_chat_dispatched_skill(client, tenant, agent, skill):
    """A chat dispatch records the agent execution's public id as the chat message id."""
    agent_execution = make(tenant, agent, state=ExecutionState.WAITING_FOR_SUB_EXECUTION)
    message_id = f"execution:{agent_execution.id}"
    first = make(
        tenant,
        skill,
        parent=agent_execution,
        source=ExecutionSource.CHAT,
        chat_message_id=message_id,
        chat_tool_call_id="tc_1",
    )
    sub = make(tenant, agent, parent=first, source=ExecutionSource.SUB)
    # one execution for the message: that execution, with its children (bare UUID or prefixed)
    for value in (message_id, str(agent_execution.id)):
        response = client.get("/api/v1/executions/nestings", {"chatMessageId": value}, headers=key_headers(tenant))
        assert shape(response.json()) == (str(first.id), [(str(sub.id), [])])
    # two for the message (two skill calls in one turn): the execution they share, with both
    second = make(
        tenant,
        skill,
        parent=agent_execution,
        source=ExecutionSource.CHAT,
        chat_message_id=message_id,
        chat_tool_call_id="tc_2",
    )
    response = client.get("/api/v1/executions/nestings", {"chatMessageId": message_id}, headers=key_headers(tenant))
    assert shape(response.json()) == (
        str(agent_execution.id),
        [(str(first.id), [(str(sub.id), [])]), (str(second.id), [])],
    )


def test_nestings_parameters(client, tenant, agent):
    execution = make(tenant, agent, chat_message_id="m1")
    cases = [
        ({}, "execution_id_or_chat_message_id_required", "executionId"),
        ({"executionId": "nope"}, "invalid_execution_id", "executionId"),
        ({"executionId": str(execution.id), "chatMessageId": "m1"}, "conflicting_parameters", "chatMessageId"),
        ({"chatMessageId": "x" * 129}, "invalid_chat_message_id", "chatMessageId"),
    ]
    for params, code, field in cases:
        response = client.get("/api/v1/executions/nestings", params, headers=key_headers(tenant))
        assert response.status_code == 400, params
        assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)
    for params in ({"executionId": str(uuid.uuid4())}, {"chatMessageId": "unknown"}):
        response = client.get("/api/v1/executions/nestings", params, headers=key_headers(tenant))
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_nestings_leave_out_what_an_end_user_may_not_read(client, tenant, agent):
    principal = tenant.end_user_key.api_key.principal
    root = make(tenant, agent, principal=principal)
    mine = make(tenant, agent, principal=principal, parent=root)
    theirs = make(tenant, agent, parent=root)  # the service principal's
    make(tenant, agent, principal=principal, parent=theirs)  # below an unreadable one: left out too
    response = client.get(
        "/api/v1/executions/nestings", {"executionId": str(root.id)}, headers=key_headers(tenant, "end_user")
    )
    assert shape(response.json()) == (str(root.id), [(str(mine.id), [])])
    response = client.get(
        "/api/v1/executions/nestings", {"executionId": str(theirs.id)}, headers=key_headers(tenant, "end_user")
    )
    assert response.status_code == 404


# --- cross-tenant -------------------------------------------------------------------------------------


def test_another_tenants_execution_is_404_on_every_route(client, tenant, other_tenant, agent):
    execution = make(tenant, agent, chat_message_id="shared-message", finished=True)
    for kind in ("workspace", "end_user"):
        headers = key_headers(other_tenant, kind)
        responses = [
            client.get(f"/api/v1/executions/{execution.id}", headers=headers),
            client.get("/api/v1/executions/nestings", {"executionId": str(execution.id)}, headers=headers),
            client.get("/api/v1/executions/nestings", {"chatMessageId": "shared-message"}, headers=headers),
        ]
        if kind == "workspace":
            responses.append(client.post(f"/api/v1/executions/{execution.id}/purge", headers=headers))
        for response in responses:
            assert response.status_code == 404
            assert error_of(response)["code"] == "not_found"
        listed = client.get("/api/v1/executions", {"responderIds": str(agent.id)}, headers=headers)
        assert listed.json() == [] and listed["X-Total-Count"] == "0"
    execution.refresh_from_db()
    assert not execution.is_purged


# --- purge --------------------------------------------------------------------------------------------


@pytest.fixture
def skill_run(tenant, skill, media):
    """A finished skill execution with events, an artifact, a workspace archive and generated media."""
    execution = make(
        tenant,
        skill,
        inputs={"topic": "secret"},
        outputs={"text": "the secret report"},
        error=None,
        checkpoint={"messages": ["secret"]},
        file_source_ids=["notes.md"],
        input_tokens=100,
        output_tokens=50,
        cost_usd=Decimal("0.25"),
        credits=Decimal("3"),
        wallclock_ms=900,
        iteration_count=3,
        finished=True,
    )
    append_event(execution, "start", {"status": "queued"})
    append_event(execution, "text", {"text": "the secret report"})
    artifact_key = default_storage.save(f"workspaces/{execution.id}/outputs/report.md", ContentFile(b"# secret"))
    material_key = default_storage.save(f"workspaces/{execution.id}/inputs/materials/notes.md", ContentFile(b"x"))
    Artifact.objects.create(
        execution=execution,
        relpath_in_workspace="outputs/report.md",
        document_type="text/markdown",
        size_bytes=8,
        storage_key=artifact_key,
    )
    archive = StoredFile.objects.create(
        workspace=tenant.workspace,
        purpose=FilePurpose.GENERATED,
        filename="workspace.zip",
        content_type="application/zip",
        size_bytes=2,
        storage_key=default_storage.save(f"generated/{tenant.workspace.id}/archive.zip", ContentFile(b"PK")),
    )
    image = StoredFile.objects.create(
        workspace=tenant.workspace,
        purpose=FilePurpose.GENERATED,
        filename="image.png",
        content_type="image/png",
        size_bytes=3,
        storage_key=default_storage.save(f"generated/{tenant.workspace.id}/image.png", ContentFile(b"PNG")),
    )
    append_event(execution, "media_gen_complete", {"storage_key": image.storage_key, "url": "/files/download/x"})
    attachment = StoredFile.objects.create(
        workspace=tenant.workspace,
        purpose=FilePurpose.ATTACHMENT,
        filename="input.txt",
        content_type="text/plain",
        size_bytes=2,
        storage_key=default_storage.save(f"attachments/{tenant.workspace.id}/input.txt", ContentFile(b"in")),
    )
    Execution.objects.filter(id=execution.id).update(workspace_archive=archive)
    execution.refresh_from_db()
    execution.keys = {
        "artifact": artifact_key,
        "material": material_key,
        "archive": archive.storage_key,
        "image": image.storage_key,
        "attachment": attachment.storage_key,
    }
    return execution


def assert_purged(execution, media_root):
    before = Execution.objects.get(id=execution.id)
    assert before.is_purged and before.purged_at is not None
    assert (before.inputs, before.outputs, before.error, before.checkpoint, before.resume_input) == (
        {},
        None,
        None,
        {},
        None,
    )
    assert before.file_source_ids == []
    # the accounting and the history are intact
    assert (before.input_tokens, before.output_tokens, before.cost_usd, before.credits) == (
        execution.input_tokens,
        execution.output_tokens,
        execution.cost_usd,
        execution.credits,
    )
    assert (before.state, before.created_at, before.started_at, before.finished_at) == (
        execution.state,
        execution.created_at,
        execution.started_at,
        execution.finished_at,
    )
    assert (before.wallclock_ms, before.iteration_count) == (execution.wallclock_ms, execution.iteration_count)
    # events, artifacts and files are gone
    assert not ExecutionEvent.objects.filter(execution_id=execution.id).exists()
    assert not Artifact.objects.filter(execution_id=execution.id).exists()
    assert before.workspace_archive_id is None
    assert not StoredFile.objects.filter(storage_key__in=[execution.keys["archive"], execution.keys["image"]]).exists()
    for name in ("artifact", "material", "archive", "image"):
        assert not default_storage.exists(execution.keys[name]), name
    assert not (media_root / "workspaces" / str(execution.id)).exists()
    # the caller's own upload is not the execution's
    assert default_storage.exists(execution.keys["attachment"])


def test_purge_through_the_api(client, tenant, skill_run, media):
    response = client.post(f"/api/v1/executions/{skill_run.id}/purge", headers=key_headers(tenant))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == SPEC_FIELDS
    assert body["isPurged"] is True and body["status"] == "completed"
    assert body["creditsUsed"] == 3.0
    assert (body["detail"]["inputs"], body["detail"]["outputs"], body["detail"]["error"]) == (None, None, None)
    assert body["detail"]["usage"]["inputTokens"] == 100 and body["detail"]["usage"]["costUsd"] == 0.25
    assert_purged(skill_run, media)
    # purging again answers the purged execution; reads show it purged
    again = client.post(f"/api/v1/executions/{skill_run.id}/purge", headers=key_headers(tenant))
    assert again.status_code == 200 and again.json()["isPurged"] is True
    assert client.get(f"/api/v1/executions/{skill_run.id}", headers=key_headers(tenant)).json()["isPurged"] is True


def test_purge_refuses_end_user_keys_and_unfinished_executions(client, tenant, agent, skill_run):
    response = client.post(f"/api/v1/executions/{skill_run.id}/purge", headers=key_headers(tenant, "end_user"))
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    for state in (ExecutionState.QUEUED, ExecutionState.RUNNING, ExecutionState.AWAITING_APPROVAL):
        execution = make(tenant, agent, state=state, inputs={"message": "keep me"})
        append_event(execution, "start", {"status": "queued"})
        response = client.post(f"/api/v1/executions/{execution.id}/purge", headers=key_headers(tenant))
        assert response.status_code == 409, state
        assert error_of(response)["code"] == "execution_not_finished"
        execution.refresh_from_db()
        assert not execution.is_purged and execution.inputs == {"message": "keep me"}
        assert execution.events.count() == 1
    skill_run.refresh_from_db()
    assert not skill_run.is_purged


def test_purge_through_the_admin(client, tenant, agent, skill_run, media):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    running = make(tenant, agent, state=ExecutionState.RUNNING, inputs={"message": "still running"})
    response = client.post(
        "/admin/executions/execution/",
        {"action": "purge_executions", "_selected_action": [str(skill_run.id), str(running.id)]},
    )
    assert response.status_code == 302
    assert_purged(skill_run, media)
    running.refresh_from_db()
    assert not running.is_purged and running.inputs == {"message": "still running"}
    messages = [str(m) for m in response.wsgi_request._messages]
    assert "Purged 1 execution(s)." in messages
    assert any("Skipped 1 unfinished" in m for m in messages)


def test_retention_purges_finished_executions_older_than_the_workspace_setting(
    tenant, other_tenant, agent, settings, media
):
    from executions.purge import purge_expired_executions
    from workers import tasks

    tenant.workspace.execution_retention_days = 30
    tenant.workspace.save()
    now = timezone.now()
    expired = make(
        tenant,
        agent,
        inputs={"message": "old"},
        credits=Decimal("1"),
        finished=True,
        finished_at=now - timedelta(days=31),
    )
    append_event(expired, "start", {"status": "queued"})
    recent = make(tenant, agent, inputs={"message": "new"}, finished=True, finished_at=now - timedelta(days=29))
    old_but_suspended = make(tenant, agent, state=ExecutionState.AWAITING_APPROVAL, inputs={"message": "waiting"})
    Execution.objects.filter(id=old_but_suspended.id).update(created_at=now - timedelta(days=90))
    kept_forever = make(
        other_tenant, None, inputs={"message": "forever"}, finished=True, finished_at=now - timedelta(days=3650)
    )

    assert purge_expired_executions() == 1
    expired.refresh_from_db()
    assert expired.is_purged and expired.inputs == {} and expired.credits == Decimal("1")
    assert not expired.events.exists()
    for execution in (recent, old_but_suspended, kept_forever):
        execution.refresh_from_db()
        assert not execution.is_purged and execution.inputs
    assert purge_expired_executions() == 0  # nothing left to do

    # beat runs it hourly through a thin task
    assert settings.CELERY_BEAT_SCHEDULE["purge-expired-executions"] == {
        "task": "workers.tasks.purge_expired_executions",
        "schedule": float(settings.PURGE_INTERVAL_SECONDS),
    }
    tenant.workspace.execution_retention_days = 1
    tenant.workspace.save()
    assert tasks.purge_expired_executions() == 1  # `recent` is now past the retention
    recent.refresh_from_db()
    assert recent.is_purged


# --- the schema -----------------------------------------------------------------------------------------


def test_schema_documents_the_routes_the_status_enum_and_the_detail_variants(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in (
        "/api/v1/executions",
        "/api/v1/executions/{id}",
        "/api/v1/executions/nestings",
        "/api/v1/executions/{id}/purge",
    ):
        assert path in schema["paths"], path
    listing = schema["paths"]["/api/v1/executions"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"pageNumber", "pageSize", "responderIds"}
    assert {"X-Total-Count", "X-Total-Pages"} <= set(listing["responses"]["200"]["headers"])
    nestings = schema["paths"]["/api/v1/executions/nestings"]["get"]
    assert {p["name"] for p in nestings["parameters"]} >= {"executionId", "chatMessageId"}
    components = schema["components"]["schemas"]
    assert set(components["Execution"]["required"]) == SPEC_FIELDS
    status = components["Execution"]["properties"]["status"]["allOf"][0]["$ref"].rsplit("/", 1)[-1]
    assert components[status]["enum"] == STATUSES
    detail = components["ExecutionDetail"]
    assert detail["discriminator"]["propertyName"] == "type"
    assert set(detail["discriminator"]["mapping"]) == {"agent", "skill", "batch_item"}
    assert len(detail["oneOf"]) == 3
    assert "children" in components["ExecutionNesting"]["properties"]
