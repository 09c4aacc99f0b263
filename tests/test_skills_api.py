"""The skills API: standalone executions, their documented object, staging, artifacts, lookups."""

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from accounts.models import ApiKeyKind, ModelAlias
from accounts.services import issue_api_key
from executions.models import Execution, ExecutionSource, ExecutionState
from files.models import StoredFile
from tests.factories import SkillFactory
from tests.helpers import auth, read_stream, stream, wait_for

REPORT_MANIFEST = {
    "inputs_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"topic": {"type": "string", "minLength": 1}, "depth": {"type": "integer", "minimum": 1}},
        "required": ["topic"],
        "additionalProperties": False,
    },
    "instructions": "Write a report to outputs/report.md.",
    "tools": ["list_files", "read_file", "write_file"],
    "limits": {"max_iterations": 6},
    "model": {
        "provider": "builtin",
        "script": [
            {"tool_calls": [{"name": "list_files", "arguments": {}}]},
            {"tool_calls": [{"name": "read_file", "arguments": {"path": "inputs/materials/notes.md"}}]},
            {
                "tool_calls": [
                    {"name": "write_file", "arguments": {"path": "outputs/report.md", "content": "# Report\n"}}
                ]
            },
            {"text": "The report is in outputs/report.md."},
        ],
    },
}

DOCUMENTED_FIELDS = {
    "id",
    "tenant_id",
    "space_id",
    "principal_id",
    "skill_slug",
    "skill_version",
    "source",
    "state",
    "parent_execution_id",
    "created_at",
    "started_at",
    "finished_at",
    "failure_reason",
    "resource_usage",
    "inputs",
    "outputs",
    "error",
    "artifacts",
    "sub_executions",
    "chat_thread_id",
    "chat_message_id",
    "chat_tool_call_id",
    "workspace_archive_id",
    "langfuse_trace_id",
    "idempotency_key",
}


@pytest.fixture
def make_skill(tenant):
    def make(slug="report", manifest=REPORT_MANIFEST, workspace=None):
        return SkillFactory(workspace=workspace or tenant.workspace, slug=slug, name=slug, manifest=manifest)

    return make


def start_url(tenant, slug="report"):
    return f"/v1/spaces/{tenant.workspace.id}/skills/{slug}/executions"


def executions_url(tenant, suffix=""):
    return f"/v1/spaces/{tenant.workspace.id}/skills/executions{suffix}"


# --- starting: the documented object, validation, models, idempotency --------------------------------


@pytest.mark.django_db
def test_start_answers_201_with_every_documented_field(client, tenant, make_skill):
    make_skill()
    response = client.post(
        start_url(tenant),
        data={"inputs": {"topic": "otters"}},
        content_type="application/json",
        headers={**auth(tenant), "Idempotency-Key": "first"},
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert set(data) == DOCUMENTED_FIELDS
    execution = Execution.objects.get()
    assert data["id"] == str(execution.id)
    assert data["tenant_id"] == str(tenant.tenant.id) and data["space_id"] == str(tenant.workspace.id)
    assert data["principal_id"] == str(tenant.end_user_key.api_key.principal_id)
    assert data["skill_slug"] == "report" and data["skill_version"] == 1
    assert data["source"] == "standalone" and data["state"] == "queued"
    assert data["inputs"] == {"topic": "otters"}
    assert data["resource_usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": "0.000000",
        "wallclock_ms": None,
        "iteration_count": 0,
    }
    assert data["artifacts"] == [] and data["sub_executions"] == []
    assert data["idempotency_key"] == "first"
    assert data["parent_execution_id"] is None and data["chat_tool_call_id"] is None
    assert execution.skill_version.skill.slug == "report"


@pytest.mark.django_db
def test_schema_validation_lists_every_failing_field(client, tenant, make_skill):
    make_skill()
    response = client.post(
        start_url(tenant),
        data={"inputs": {"depth": 0, "extra": 1}},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_inputs"
    fields = sorted(e["field"] for e in error["errors"])
    assert fields == ["inputs", "inputs.depth", "inputs.topic"]  # extra property, minimum, required
    missing = client.post(start_url(tenant), data={}, content_type="application/json", headers=auth(tenant))
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "inputs"
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_model_alias_allow_list_and_default(client, tenant, make_skill):
    make_skill()
    ModelAlias.objects.create(
        workspace=tenant.workspace,
        alias="fast",
        provider="builtin",
        input_usd_per_million_tokens=1,
        output_usd_per_million_tokens=2,
    )
    ModelAlias.objects.create(workspace=tenant.workspace, alias="secret", provider="builtin", allowed=False)
    refused = client.post(
        start_url(tenant),
        data={"inputs": {"topic": "x"}, "model": "secret"},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "model_not_allowed" and refused.json()["error"]["alias"] == "secret"
    unknown = client.post(
        start_url(tenant),
        data={"inputs": {"topic": "x"}, "model": {"alias": "nope"}},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"]["message"]
    ok = client.post(
        start_url(tenant),
        data={"inputs": {"topic": "x"}, "model": {"alias": "fast"}},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert ok.status_code == 201
    assert Execution.objects.get().model_config["alias"] == "fast"
    tenant.workspace.default_model_alias = "fast"
    tenant.workspace.save()
    client.post(
        start_url(tenant), data={"inputs": {"topic": "y"}}, content_type="application/json", headers=auth(tenant)
    )
    assert Execution.objects.order_by("-created_at").first().model_config["alias"] == "fast"


@pytest.mark.django_db
def test_same_idempotency_key_is_409_with_the_original_id(client, tenant, make_skill):
    make_skill()
    headers = {**auth(tenant), "Idempotency-Key": "k-1"}
    first = client.post(
        start_url(tenant), data={"inputs": {"topic": "x"}}, content_type="application/json", headers=headers
    )
    again = client.post(
        start_url(tenant), data={"inputs": {"topic": "x"}}, content_type="application/json", headers=headers
    )
    assert again.status_code == 409
    assert again.json()["error"]["execution_id"] == first.json()["data"]["id"]
    assert Execution.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_make_one_execution(live, tenant, make_skill):
    make_skill()
    headers = {**auth(tenant), "Idempotency-Key": "burst"}

    def send(_):
        return httpx.post(f"{live}{start_url(tenant)}", json={"inputs": {"topic": "x"}}, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(r.status_code for r in pool.map(send, range(20)))
    assert statuses == [201] + [409] * 19
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_unknown_skill_and_another_space_are_404(client, tenant, other_tenant, make_skill):
    make_skill()
    assert (
        client.post(
            start_url(tenant, "nope"), data={"inputs": {}}, content_type="application/json", headers=auth(tenant)
        ).status_code
        == 404
    )
    # another tenant's key on this space, and this tenant's key on the other's space
    assert (
        client.post(
            start_url(tenant),
            data={"inputs": {"topic": "x"}},
            content_type="application/json",
            headers={"X-API-Key": other_tenant.workspace_key.raw_key},
        ).status_code
        == 404
    )
    assert (
        client.post(
            start_url(other_tenant),
            data={"inputs": {"topic": "x"}},
            content_type="application/json",
            headers=auth(tenant),
        ).status_code
        == 404
    )
    assert client.get(executions_url(other_tenant), headers=auth(tenant)).status_code == 404
    assert client.get(executions_url(tenant), headers=auth(other_tenant)).status_code == 404


# --- running: staging, tools, artifacts, archive ------------------------------------------------------


def upload(api, tenant, name, content: bytes):
    response = api.post("/v1/files/", headers=auth(tenant), files={"file": (name, content, "text/markdown")})
    assert response.status_code == 201, response.text


@pytest.mark.django_db(transaction=True)
def test_a_skill_stages_materials_uses_its_workspace_and_leaves_artifacts(api, tenant, make_skill):
    make_skill()
    upload(api, tenant, "notes.md", b"otters hold hands")
    response = api.post(
        start_url(tenant),
        headers=auth(tenant),
        json={"inputs": {"topic": "otters"}, "file_source_ids": ["notes.md", "missing.txt"]},
    )
    execution_id = response.json()["data"]["id"]
    events = stream(api, "GET", executions_url(tenant, f"/{execution_id}/events"), auth(tenant))
    kinds = [e.data["type"] for e in events]
    assert kinds[:4] == ["start", "state_changed", "materials_staged", "node_start"]
    assert events[1].data["state"] == "running"
    assert events[2].data["staged"] == ["notes.md"] and events[2].data["missing"] == ["missing.txt"]
    assert kinds.count("iteration") == 4 and kinds.count("tool_call") == 3
    assert kinds[-4:] == ["text", "node_complete", "artifact", "final"]
    results = [e.data for e in events if e.data["type"] == "tool_result"]
    assert [f["path"] for f in results[0]["result"]["files"]] == ["inputs/materials/notes.md"]
    assert results[1]["result"]["content"] == "otters hold hands"

    data = api.get(executions_url(tenant, f"/{execution_id}"), headers=auth(tenant)).json()["data"]
    assert data["state"] == "completed"
    assert data["outputs"] == {"text": "The report is in outputs/report.md."}
    assert data["resource_usage"]["iteration_count"] == 4 and data["resource_usage"]["wallclock_ms"] > 0
    [artifact] = data["artifacts"]
    assert artifact["relpath_in_workspace"] == "outputs/report.md"
    assert artifact["document_type"] == "text/markdown" and artifact["size_bytes"] == 9
    download = api.get(artifact["download_url"], headers=auth(tenant))
    assert download.status_code == 200 and download.content == b"# Report\n"
    # the link works only for this tenant, and only with a key
    url = artifact["download_url"]
    assert api.get(url).status_code == 401
    assert api.get(url.replace("token=", "token=x"), headers=auth(tenant)).status_code == 404
    archive = StoredFile.objects.get(id=data["workspace_archive_id"])
    from django.core.files.storage import default_storage

    with default_storage.open(archive.storage_key, "rb") as handle:
        names = zipfile.ZipFile(io.BytesIO(handle.read())).namelist()
    assert sorted(names) == ["inputs/materials/notes.md", "outputs/report.md"]


@pytest.mark.django_db(transaction=True)
def test_outputs_schema_is_enforced(api, tenant, make_skill):
    manifest = {
        **REPORT_MANIFEST,
        "tools": [],
        "outputs_schema": {"type": "object", "required": ["score"]},
        "model": {"provider": "builtin", "reply": '{"grade": 3}'},
    }
    make_skill("graded", manifest)
    response = api.post(start_url(tenant, "graded"), headers=auth(tenant), json={"inputs": {"topic": "x"}})
    execution_id = response.json()["data"]["id"]
    execution = wait_for(lambda: Execution.objects.filter(id=execution_id, state="failed").first())
    assert execution.failure_reason == "outputs_invalid"


@pytest.mark.django_db(transaction=True)
def test_a_skill_that_calls_a_sub_skill(api, tenant, make_skill):
    make_skill(
        "child",
        {
            "inputs_schema": {"type": "object", "required": ["q"]},
            "model": {"provider": "builtin", "reply": "child answer"},
        },
    )
    make_skill(
        "parent",
        {
            "inputs_schema": {"type": "object"},
            "tools": ["call_skill"],
            "model": {
                "provider": "builtin",
                "script": [
                    {"tool_calls": [{"name": "call_skill", "arguments": {"skill": "child", "inputs": {}}}]},
                    {"tool_calls": [{"name": "call_skill", "arguments": {"skill": "child", "inputs": {"q": "why"}}}]},
                    {"text": "parent done"},
                ],
            },
        },
    )
    response = api.post(start_url(tenant, "parent"), headers=auth(tenant), json={"inputs": {}})
    execution_id = response.json()["data"]["id"]
    events = stream(api, "GET", executions_url(tenant, f"/{execution_id}/events"), auth(tenant))
    assert events[-1].data["type"] == "final"
    results = [e.data for e in events if e.data["type"] == "tool_result"]
    assert results[0]["outcome"] == "error" and results[0]["result"]["errors"][0]["field"] == "inputs.q"
    assert results[1]["outcome"] == "success" and results[1]["result"]["outputs"] == {"text": "child answer"}
    kinds = [e.data["type"] for e in events]
    assert kinds.count("sub_execution_started") == kinds.count("sub_execution_finished") == 1
    data = api.get(executions_url(tenant, f"/{execution_id}"), headers=auth(tenant)).json()["data"]
    [child] = data["sub_executions"]
    assert child["parent_execution_id"] == execution_id and child["skill_slug"] == "child"
    assert child["state"] == "completed" and child["source"] == "sub"


# --- reading: list, get, cancel, chat lookup ---------------------------------------------------------


@pytest.mark.django_db
def test_list_filters_and_paginates(client, tenant, make_skill):
    make_skill()
    make_skill("other")
    for slug in ("report", "report", "other"):
        client.post(
            start_url(tenant, slug),
            data={"inputs": {"topic": "x"}},
            content_type="application/json",
            headers=auth(tenant),
        )
    page = client.get(executions_url(tenant), {"limit": 2}, headers=auth(tenant)).json()
    assert len(page["data"]) == 2 and page["pagination"] == {"limit": 2, "offset": 0, "total": 3}
    assert len(client.get(executions_url(tenant), {"skill": "report"}, headers=auth(tenant)).json()["data"]) == 2
    assert len(client.get(executions_url(tenant), {"state": "queued"}, headers=auth(tenant)).json()["data"]) == 3
    assert client.get(executions_url(tenant), {"state": "bogus"}, headers=auth(tenant)).status_code == 400
    assert client.get(executions_url(tenant), {"limit": 201}, headers=auth(tenant)).status_code == 400
    # another end user of the workspace sees none of them; the workspace key sees all
    someone = issue_api_key(tenant.workspace, ApiKeyKind.END_USER)
    assert client.get(executions_url(tenant), headers={"X-API-Key": someone.raw_key}).json()["data"] == []
    assert len(client.get(executions_url(tenant), headers=auth(tenant, "workspace")).json()["data"]) == 3


@pytest.mark.django_db
def test_get_and_cancel(client, tenant, make_skill):
    make_skill()
    created = client.post(
        start_url(tenant), data={"inputs": {"topic": "x"}}, content_type="application/json", headers=auth(tenant)
    ).json()["data"]
    got = client.get(executions_url(tenant, f"/{created['id']}"), headers=auth(tenant))
    assert got.status_code == 200 and set(got.json()["data"]) == DOCUMENTED_FIELDS
    cancelled = client.post(executions_url(tenant, f"/{created['id']}/cancel"), headers=auth(tenant))
    assert cancelled.status_code == 200 and cancelled.json()["data"]["state"] == "cancelled"


@pytest.mark.django_db
def test_chat_tool_call_lookup_before_and_after_the_execution_exists(client, tenant, other_tenant, make_skill):
    skill = make_skill()
    url = executions_url(tenant, "/by-chat-tool-call/call_123")
    assert client.get(url, headers=auth(tenant)).status_code == 404
    from executions import services

    execution = services.create_execution(
        workspace=tenant.workspace,
        principal=tenant.end_user_key.api_key.principal,
        source=ExecutionSource.CHAT,
        inputs={"topic": "x"},
        skill_version=skill.live_version,
        chat_thread_id="thread_1",
        chat_message_id="msg_1",
        chat_tool_call_id="call_123",
    )
    response = client.get(url, headers=auth(tenant))
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == str(execution.id) and data["state"] == ExecutionState.QUEUED
    assert (data["source"], data["chat_thread_id"], data["chat_message_id"], data["chat_tool_call_id"]) == (
        "chat",
        "thread_1",
        "msg_1",
        "call_123",
    )
    assert (
        client.get(
            url.replace(str(tenant.workspace.id), str(other_tenant.workspace.id)), headers=auth(other_tenant)
        ).status_code
        == 404
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, suffix",
    [
        ("get", "/{id}"),
        ("post", "/{id}/cancel"),
        ("get", "/{id}/events"),
        ("get", "/by-chat-tool-call/call_9"),
    ],
)
def test_every_route_is_404_for_another_tenant(client, tenant, other_tenant, make_skill, method, suffix):
    skill = make_skill()
    created = client.post(
        start_url(tenant), data={"inputs": {"topic": "x"}}, content_type="application/json", headers=auth(tenant)
    ).json()["data"]
    Execution.objects.filter(id=created["id"]).update(chat_tool_call_id="call_9")
    path = suffix.format(id=created["id"])
    # the other tenant with its own space id, and with this tenant's space id
    for space in (other_tenant.workspace.id, tenant.workspace.id):
        url = f"/v1/spaces/{space}/skills/executions{path}"
        assert getattr(client, method)(url, headers=auth(other_tenant)).status_code == 404
    assert skill.live_version


@pytest.mark.django_db
def test_artifacts_go_to_s3_through_boto3_and_download_through_their_url(
    client, tenant, make_skill, settings, s3_server, monkeypatch
):
    """The runtime runs in this process (nothing is dispatched before commit) with S3 as the storage."""
    from workers.runtime import run_execution

    endpoint, s3 = s3_server
    s3.create_bucket(Bucket="skills-test")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": "skills-test", "endpoint_url": endpoint, "region_name": "us-east-1"},
        },
    }
    make_skill()
    created = client.post(
        start_url(tenant), data={"inputs": {"topic": "x"}}, content_type="application/json", headers=auth(tenant)
    ).json()["data"]
    assert run_execution(created["id"]) == "completed"

    data = client.get(executions_url(tenant, f"/{created['id']}"), headers=auth(tenant)).json()["data"]
    [artifact] = data["artifacts"]
    key = f"workspaces/{created['id']}/outputs/report.md"
    assert s3.get_object(Bucket="skills-test", Key=key)["Body"].read() == b"# Report\n"
    redirect = client.get(artifact["download_url"], headers=auth(tenant))
    assert redirect.status_code == 302
    assert httpx.get(redirect["Location"], timeout=10).content == b"# Report\n"  # a presigned URL of the S3 server
    archive = StoredFile.objects.get(id=data["workspace_archive_id"])
    assert s3.head_object(Bucket="skills-test", Key=archive.storage_key)["ContentLength"] == archive.size_bytes


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_skill_resumes_from_its_checkpoint(live, worker, tenant, make_skill):
    slow_text = " ".join(f"w{i:02d}" for i in range(40))
    manifest = {
        **REPORT_MANIFEST,
        "model": {
            "provider": "builtin",
            "chunk_delay_ms": 100,
            "script": [
                {"tool_calls": [{"name": "write_file", "arguments": {"path": "outputs/a.md", "content": "A"}}]},
                {"text": slow_text},
            ],
        },
    }
    make_skill("slow", manifest)
    execution_id = httpx.post(
        f"{live}{start_url(tenant, 'slow')}", headers=auth(tenant), json={"inputs": {"topic": "x"}}, timeout=30
    ).json()["data"]["id"]
    events = read_stream(
        "GET",
        f"{live}{executions_url(tenant, f'/{execution_id}/events')}",
        auth(tenant),
        stop=lambda evs: sum(e.data["type"] == "text" for e in evs) >= 4,
    )
    assert [e.data["type"] for e in events].count("tool_result") == 1
    assert int(Execution.objects.get(id=execution_id).lease_owner.rsplit(":", 1)[1]) == worker.pid
    worker.kill_and_restart()

    execution = wait_for(lambda: Execution.objects.filter(id=execution_id, state="completed").first(), timeout=60)
    assert execution.attempt == 2
    assert execution.outputs == {"text": slow_text}
    from executions.models import ExecutionEvent

    kinds = list(ExecutionEvent.objects.filter(execution_id=execution_id).values_list("type", flat=True))
    # the first turn (the tool call) was not repeated; the streamed text was not sent twice
    assert kinds.count("tool_call") == 1 and kinds.count("materials_staged") == 1 and kinds.count("final") == 1
    texts = ExecutionEvent.objects.filter(execution_id=execution_id, type="text").order_by("seq")
    assert "".join(e.data["text"] for e in texts) == slow_text
    assert [a.relpath_in_workspace for a in execution.artifacts.all()] == ["outputs/a.md"]


@pytest.mark.django_db(transaction=True)
def test_the_demo_skill_writes_a_report_from_the_staged_materials(api, tenant):
    from agents.demo import DEMO_SKILL_MANIFEST

    SkillFactory(workspace=tenant.workspace, slug="demo-report", name="Demo report", manifest=DEMO_SKILL_MANIFEST)
    upload(api, tenant, "otters.md", b"Sea otters hold hands while they sleep.")
    missing_topic = api.post(start_url(tenant, "demo-report"), headers=auth(tenant), json={"inputs": {}})
    assert missing_topic.status_code == 422 and missing_topic.json()["error"]["errors"][0]["field"] == "inputs.topic"
    created = api.post(
        start_url(tenant, "demo-report"),
        headers=auth(tenant),
        json={"inputs": {"topic": "otters"}, "file_source_ids": ["otters.md"]},
    ).json()["data"]
    events = stream(api, "GET", executions_url(tenant, "/" + created["id"] + "/events"), auth(tenant))
    assert events[-1].data["type"] == "final"
    assert events[-1].data["output"]["text"] == "The report on otters is in outputs/report.md."
    data = api.get(executions_url(tenant, "/" + created["id"]), headers=auth(tenant)).json()["data"]
    [artifact] = data["artifacts"]
    report = api.get(f"{artifact['download_url']}", headers=auth(tenant)).text
    assert report.startswith("# Report: otters\n")
    assert "## otters.md\n\nSea otters hold hands while they sleep." in report


@pytest.mark.django_db(transaction=True)
def test_a_chat_agent_dispatches_a_skill_with_the_chat_ids(live, tenant, make_skill):
    from agents.models import Agent
    from agents.services import publish_agent_version

    make_skill(
        "order-lookup",
        {
            "inputs_schema": {"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}},
            "model": {
                "provider": "builtin",
                "chunk_delay_ms": 100,
                "reply": "order 17 has shipped and arrives tomorrow morning",
            },
        },
    )
    agent = Agent.objects.create(workspace=tenant.workspace, name="chat")
    publish_agent_version(
        agent,
        {
            "nodes": [
                {
                    "id": "chat",
                    "type": "ai",
                    "skills": ["order-lookup"],
                    "model": {
                        "provider": "builtin",
                        "script": [
                            {"tool_calls": [{"name": "order_lookup", "arguments": {"q": "order 17"}}]},
                            {"text": "Skill said: {{last_tool_result.result.outputs.text}}"},
                        ],
                    },
                }
            ]
        },
    )
    scope = httpx.post(
        f"{live}/my/conversations", json={"agent_id": str(agent.id)}, headers=auth(tenant), timeout=10
    ).json()["data"]["id"]
    events = read_stream(
        "POST",
        f"{live}/agents/{agent.id}/execute/stream",
        auth(tenant),
        {"message": "where is my order?", "conversation_scope": scope},
        stop=lambda evs: evs[-1].data["type"] == "sub_execution_started",
    )
    call_id = next(e.data["tool_call_id"] for e in events if e.data["type"] == "tool_call")
    lookup = httpx.get(
        f"{live}{executions_url(tenant, '/by-chat-tool-call/' + call_id)}", headers=auth(tenant), timeout=10
    )
    assert lookup.status_code == 200
    child = lookup.json()["data"]
    assert child["state"] in ("queued", "running")  # found while it still runs
    assert child["source"] == "chat" and child["chat_tool_call_id"] == call_id
    assert child["chat_thread_id"] == scope
    assert child["chat_message_id"] == events[0].data["execution_id"]
    assert child["parent_execution_id"] == events[0].data["execution_id"].removeprefix("execution:")
    assert child["inputs"] == {"q": "order 17"} and child["skill_slug"] == "order-lookup"

    rest = read_stream(
        "GET",
        f"{live}/executions/{events[0].data['execution_id']}/events",
        {**auth(tenant), "Last-Event-ID": events[-1].id},
    )
    assert rest[-1].data["type"] == "final"
    assert rest[-1].data["output"]["text"] == "Skill said: order 17 has shipped and arrives tomorrow morning"


@pytest.mark.django_db
def test_an_agents_skill_tools_collide_with_client_tools(client, tenant, make_skill):
    from agents.models import Agent
    from agents.services import publish_agent_version

    make_skill("order-lookup")
    agent = Agent.objects.create(workspace=tenant.workspace, name="chat")
    publish_agent_version(
        agent, {"nodes": [{"id": "chat", "type": "ai", "skills": ["order-lookup"], "model": {"provider": "builtin"}}]}
    )
    response = client.post(
        f"/agents/{agent.id}/execute",
        data={"message": "hi", "client_tools": [{"name": "order_lookup"}]},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "client_tool_name_collision"


@pytest.mark.django_db
def test_published_versions_are_immutable(tenant, make_skill):
    version = make_skill().live_version
    version.manifest = {"instructions": "changed"}
    with pytest.raises(ValueError):
        version.save()


@pytest.mark.django_db
def test_cost_comes_from_the_alias_prices_and_max_seconds_is_enforced(client, tenant, make_skill):
    from workers.runtime import run_execution

    ModelAlias.objects.create(
        workspace=tenant.workspace,
        alias="priced",
        provider="builtin",
        options={"reply": "one two three"},
        input_usd_per_million_tokens=3,
        output_usd_per_million_tokens=15,
    )
    make_skill("plain", {"inputs_schema": {"type": "object"}})
    created = client.post(
        start_url(tenant, "plain"),
        data={"inputs": {"a": 1}, "model": "priced"},
        content_type="application/json",
        headers=auth(tenant),
    ).json()["data"]
    assert run_execution(created["id"]) == "completed"
    execution = Execution.objects.get(id=created["id"])
    assert execution.outputs == {"text": "one two three"}
    expected = (execution.input_tokens * 3 + execution.output_tokens * 15) / 1_000_000
    assert execution.output_tokens == 3 and float(execution.cost_usd) == pytest.approx(expected)
    data = client.get(executions_url(tenant, f"/{created['id']}"), headers=auth(tenant)).json()["data"]
    assert data["resource_usage"]["cost_usd"] == f"{execution.cost_usd:f}"

    make_skill(
        "slow",
        {
            "limits": {"max_seconds": 1},
            "model": {"provider": "builtin", "chunk_delay_ms": 200, "reply": " ".join(["w"] * 30)},
        },
    )
    slow = client.post(
        start_url(tenant, "slow"), data={"inputs": {}}, content_type="application/json", headers=auth(tenant)
    ).json()["data"]
    assert run_execution(slow["id"]) == "failed"
    assert Execution.objects.get(id=slow["id"]).failure_reason == "time_limit_exceeded"


@pytest.mark.django_db
def test_artifact_links_are_404_for_other_tenants(client, tenant, other_tenant, make_skill):
    from api.skills.serializers import artifact_download_url
    from executions.models import Artifact

    make_skill()
    created = client.post(
        start_url(tenant), data={"inputs": {"topic": "x"}}, content_type="application/json", headers=auth(tenant)
    ).json()["data"]
    artifact = Artifact.objects.create(
        execution_id=created["id"],
        relpath_in_workspace="outputs/a.md",
        document_type="text/markdown",
        size_bytes=1,
        storage_key="nowhere",
    )
    url = artifact_download_url(artifact)
    assert client.get(url, headers=auth(other_tenant)).status_code == 404
    assert client.get(url, headers={"X-API-Key": other_tenant.workspace_key.raw_key}).status_code == 404
    # another end user of the same workspace neither
    someone = issue_api_key(tenant.workspace, ApiKeyKind.END_USER)
    assert client.get(url, headers={"X-API-Key": someone.raw_key}).status_code == 404
