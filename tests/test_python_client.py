"""The Python client (clients/python, `skillrun_client`) against the live server: its models agree
with /api/schema/, every helper, streams resumed after the connection is cut, error mapping."""

import asyncio

import httpx
import pytest
from pydantic import BaseModel
from skillrun_client import (
    AsyncSkillrunClient,
    BadRequestError,
    NotFoundError,
    SkillrunClient,
    SkillrunError,
    TransportError,
    models,
)
from skillrun_client._core import OPERATION_MODELS

from conversations.models import MemoryFact
from tests.factories import SkillFactory
from tests.helpers import WORDS_20, CuttingProxy

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
# every route of the agents, skills and query APIs (not /api/schema/ itself, /healthz, /admin/)
SURFACES = ("/agents", "/executions/", "/attachments/", "/my/", "/users/", "/v1/", "/api/v1/executions")


def client_for(live, tenant, kind="end_user", **kwargs) -> SkillrunClient:
    key = tenant.end_user_key if kind == "end_user" else tenant.workspace_key
    return SkillrunClient(live, key.raw_key, str(tenant.workspace.id), **kwargs)


# --- the models agree with the OpenAPI document ----------------------------------------------------


def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _object_schema(schema: dict, components: dict) -> dict:
    """The object a response carries: inside `{"data": ...}`, or an array's items."""
    schema = _resolve(schema, components)
    if schema.get("type") == "array":
        return _object_schema(schema["items"], components)
    props = schema.get("properties", {})
    if set(props) == {"data"}:  # the envelope (a page with `pagination` is a model of its own)
        return _object_schema(props["data"], components)
    return schema


def _compare_events(where: str, components: dict) -> list[str]:
    """`Event` against the documented event types (a oneOf on `type`): its required members are
    required by every type, its optional ones belong to some type."""
    variants = [_resolve(variant, components) for variant in components["ExecutionEvent"]["oneOf"]]
    names, required = _fields(models.Event)
    problems = []
    for variant in variants:
        if missing := required - set(variant.get("required", [])):
            problems.append(f"{where}: {variant.get('title')} does not require {sorted(missing)}")
    if unknown := names - set().union(*(set(variant.get("properties", {})) for variant in variants)):
        problems.append(f"{where}: no event type has {sorted(unknown)}")
    return problems


def _nullable(schema: dict) -> bool:
    return schema.get("nullable") is True or any(part.get("type") == "null" for part in schema.get("anyOf", []))


def _fields(model: type[BaseModel]) -> tuple[set, set]:
    names = {f.alias or name for name, f in model.model_fields.items()}
    required = {f.alias or name for name, f in model.model_fields.items() if f.is_required()}
    return names, required


def _compare(where: str, schema: dict, model: type[BaseModel], *, response: bool) -> list[str]:
    names, required = _fields(model)
    props, schema_required = set(schema.get("properties", {})), set(schema.get("required", []))
    problems = []
    if response and model.__name__ == "Event":  # events: the common members are required, the rest per type
        schema_required = {"type", "execution_id", "seq"}
        props = props & names | schema_required
    if props != names:
        problems.append(
            f"{where}: schema has {sorted(props - names)} the model lacks, model has {sorted(names - props)}"
        )
    if schema_required != required:
        problems.append(f"{where}: required {sorted(schema_required)} vs the model's {sorted(required)}")
    for name, field in model.model_fields.items():  # a field the server may send as null must take None
        prop = schema.get("properties", {}).get(field.alias or name)
        if prop is not None and _nullable(prop) and not _takes_none(model, field.alias or name):
            problems.append(f"{where}: {field.alias or name} is nullable, the model refuses None")
    return problems


def _takes_none(model: type[BaseModel], name: str) -> bool:
    probe = {(f.alias or n): None for n, f in model.model_fields.items()}
    try:
        model.model_validate(probe)
    except Exception as exc:  # pydantic's ValidationError: is `name` among the failures?
        return not any(error["loc"][:1] == (name,) for error in exc.errors())
    return True


def test_models_cover_every_operation_of_the_schema(live):
    document = httpx.get(f"{live}/api/schema/?format=json", timeout=30).raise_for_status().json()
    components = document["components"]["schemas"]
    problems, seen = [], set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            op_id = operation["operationId"]
            if not path.startswith(SURFACES):
                continue
            seen.add(op_id)
            assert op_id in OPERATION_MODELS, f"{method.upper()} {path} ({op_id}) has no client models"
            request_model, response_model = OPERATION_MODELS[op_id]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None or request_model is not None:
                assert body is not None and request_model is not None, op_id
                problems += _compare(
                    f"{op_id} request", _resolve(body["schema"], components), request_model, response=False
                )
            for status, answer in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                for content_type, content in answer.get("content", {}).items():
                    if content["schema"].get("format") == "binary":
                        continue  # a file's bytes (the artifact download): the client returns them as they are
                    if content_type == "text/event-stream":
                        problems += _compare_events(f"{op_id} {status}", components)
                        continue
                    model = response_model
                    assert model is not None, f"{op_id} {status} has a body"
                    schema = _object_schema(content["schema"], components)
                    problems += _compare(f"{op_id} {status} {content_type}", schema, model, response=True)
    # nested objects of the models: each against its component
    nested = {
        "ExecuteAttachment": "Attachment",
        "ExecuteClientTool": "ClientTool",
        "ExecuteBatchItem": "BatchItem",
        "SyncExecuteResult": "ExecuteOutput",
        "SyncExecuteUsage": "Usage",
        "SyncExecuteError": "ExecuteError",
        "ExecutionDataUsage": "ExecutionUsage",
        "ExecutionDataCredits": "ExecutionCredits",
        "SkillResourceUsage": "SkillResourceUsage",
        "SkillArtifact": "SkillArtifact",
        "ExecutionUsage": "QueryUsage",
        "ModelChoice": "ModelChoice",
        "PreviewCreditsRule": "PreviewCreditsRule",
    }
    for component, model_name in nested.items():
        problems += _compare(component, components[component], getattr(models, model_name), response=False)
    detail_common = set.intersection(
        *(
            set(components[k]["required"])
            for k in ("ExecutionDetailAgent", "ExecutionDetailSkill", "ExecutionDetailBatchItem")
        )
    )
    assert _fields(models.QueryDetail)[1] == detail_common
    for page in ("PaginatedSkillExecutionList", "PaginatedMessageOutputList"):
        problems += _compare(page, components[page]["properties"]["pagination"], models.Pagination, response=False)
    assert seen == set(OPERATION_MODELS), set(OPERATION_MODELS) - seen
    assert not problems, "\n".join(problems)


# --- execute, errors, idempotency --------------------------------------------------------------------


def test_execute_and_get_the_execution(live, tenant, agent, monkeypatch):
    monkeypatch.setenv("SKILLRUN_BASE_URL", live)
    monkeypatch.setenv("SKILLRUN_API_KEY", tenant.end_user_key.raw_key)
    monkeypatch.setenv("SKILLRUN_WORKSPACE_ID", str(tenant.workspace.id))
    with SkillrunClient() as client:  # all from the environment
        result = client.execute(str(agent.id), message="hi")
        assert result.status == "completed" and result.output.text == WORDS_20
        assert result.output.usage.total_tokens > 0
        execution = client.get_execution(result.execution_id)
        assert execution.state == "completed" and execution.last_event_seq > 0
        token = client.stream_token(result.execution_id)
        assert token.token and token.expires_in > 0


def test_errors_carry_code_status_and_field(live, tenant, agent):
    with client_for(live, tenant) as client:
        with pytest.raises(NotFoundError) as missing:
            client.get_execution("00000000-0000-4000-8000-000000000000")
        assert missing.value.status == 404 and missing.value.code
        with pytest.raises(BadRequestError) as bad:
            client.execute(str(agent.id), message="x" * 65_537)
        assert (bad.value.status, bad.value.code, bad.value.field) == (400, "invalid_message", "message")
        with pytest.raises(SkillrunError) as bad_tool:
            client.execute(str(agent.id), message="hi", client_tools=[{"name": "Bad-Name"}])
        assert bad_tool.value.status == 400 and bad_tool.value.field == "client_tools[0].name"


def test_idempotency_key_per_call_and_given(live, tenant, agent):
    with client_for(live, tenant) as client:
        first = client.execute(str(agent.id), message="hi")
        second = client.execute(str(agent.id), message="hi")  # a new key each call: a new execution
        assert first.execution_id != second.execution_id
        client.execute(str(agent.id), message="hi", idempotency_key="fixed-key")
        with pytest.raises(SkillrunError) as reused:
            client.execute(str(agent.id), message="hi", idempotency_key="fixed-key")
        assert reused.value.status == 409 and reused.value.code == "idempotency_key_reused"
        assert reused.value.execution_id


def test_retries_only_idempotent_calls_on_503_with_retry_after(live, tenant):
    """A transport answering 503 with Retry-After: 0 twice, then passing through."""
    seen = []

    class Flaky(httpx.HTTPTransport):
        def handle_request(self, request):
            seen.append(request.method)
            if len(seen) <= 2:
                return httpx.Response(
                    503, headers={"Retry-After": "0"}, json={"error": {"code": "service_unavailable", "message": "x"}}
                )
            return super().handle_request(request)

    with client_for(live, tenant, transport=Flaky()) as client:
        assert client.list_files() == []  # a GET: retried
        assert seen == ["GET", "GET", "GET"]
        seen.clear()
        with pytest.raises(SkillrunError) as not_retried:  # a resume carries no Idempotency-Key
            client.approval("00000000-0000-4000-8000-000000000000", "approve")
        assert not_retried.value.status == 503 and seen == ["POST"]


# --- streaming, resumed after the connection is cut ------------------------------------------------


def test_retries_only_idempotent_calls_after_a_dropped_connection(live, tenant):
    """The first connection is cut before any answer: a GET is sent again, a resume is not."""
    key, space = tenant.end_user_key.raw_key, str(tenant.workspace.id)
    proxy = CuttingProxy(live, after_bytes=0, cuts=1)
    try:
        with SkillrunClient(proxy.url, key, space) as client:
            assert client.list_files() == []
        assert proxy.connections == 2
    finally:
        proxy.close()
    proxy = CuttingProxy(live, after_bytes=0, cuts=1)
    try:
        with SkillrunClient(proxy.url, key, space) as client, pytest.raises(TransportError):
            client.approval("00000000-0000-4000-8000-000000000000", "approve")
        assert proxy.connections == 1
    finally:
        proxy.close()


def _assert_whole(events):
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap, no duplicate
    assert events[-1].type == "final"
    assert "".join(e.text for e in events if e.type == "text").split() == WORDS_20.split()


def test_stream_resumes_after_the_connection_is_cut(live, tenant, streaming_agent):
    proxy = CuttingProxy(live, after_bytes=900, cuts=2)
    key = tenant.end_user_key.raw_key
    try:
        with SkillrunClient(proxy.url, key, str(tenant.workspace.id)) as client:
            events = list(client.execute_stream(str(streaming_agent.id), message="hi"))
    finally:
        proxy.close()
    assert proxy.connections >= 3  # the start and two resumes
    _assert_whole(events)


def test_stream_cut_before_any_event_follows_the_started_execution(live, tenant, streaming_agent):
    """Cut inside the first answer's headers: the start is sent again with the same key, whose 409
    names the execution the first attempt started; the client follows that one."""
    proxy = CuttingProxy(live, after_bytes=10, cuts=1)
    try:
        with SkillrunClient(proxy.url, tenant.end_user_key.raw_key, str(tenant.workspace.id)) as client:
            events = list(client.execute_stream(str(streaming_agent.id), message="hi"))
    finally:
        proxy.close()
    _assert_whole(events)


def test_async_stream_resumes_after_the_connection_is_cut(live, tenant, streaming_agent):
    proxy = CuttingProxy(live, after_bytes=1200, cuts=1)

    async def run():
        async with AsyncSkillrunClient(proxy.url, tenant.end_user_key.raw_key, str(tenant.workspace.id)) as client:
            events = [e async for e in client.execute_stream(str(streaming_agent.id), message="hi")]
            replay = [e async for e in client.events(events[0].execution_id, after=3)]
            return events, replay

    try:
        events, replay = asyncio.run(run())
    finally:
        proxy.close()
    _assert_whole(events)
    assert [e.seq for e in replay] == [e.seq for e in events[3:]]


def test_following_a_finished_execution_from_its_end_yields_nothing(live, tenant, agent):
    """The server answers 204 to Last-Event-ID at or past the end; the client's stream just ends."""
    with SkillrunClient(live, tenant.end_user_key.raw_key, str(tenant.workspace.id)) as client:
        events = list(client.execute_stream(str(agent.id), message="hi"))
        assert list(client.events(events[0].execution_id, after=events[-1].seq)) == []
        assert [e.seq for e in client.events(events[0].execution_id, after=events[-2].seq)] == [events[-1].seq]


# --- helpers of the agents spec's flows ------------------------------------------------------------


def test_client_tool_loop(live, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "accepts_client_tools": True,
            "model": {
                "provider": "builtin",
                "script": [
                    {"text": "Let me look.", "tool_calls": [{"name": "get_location", "arguments": {"precise": True}}]},
                    {"tool_calls": [{"name": "broken", "arguments": {}}]},
                    {"text": "You are home."},
                ],
            },
        }
    )
    calls = []

    def get_location(precise):
        calls.append(precise)
        return {"city": "home"}

    def broken():
        raise RuntimeError("no sensor")

    with client_for(live, tenant) as client:
        events = client.run_with_client_tools(
            str(agent.id), "where am I?", {"get_location": get_location, "broken": broken}
        )
        assert client.get_execution(events[0].execution_id).state == "completed"
    assert calls == [True]  # `broken` raised: sent as outcome "error", the run went on
    assert events[-1].type == "final" and events[-1].status == "completed"
    assert [e.type for e in events].count("tool_call_awaiting_client") == 2
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_approve_a_gate_and_post_an_external_event(live, tenant, workflow_agent):
    agent = workflow_agent(
        {"id": "draft", "type": "ai", "model": {"provider": "builtin", "reply": "draft"}},
        {"id": "review", "type": "human_gate", "prompt": "Send?"},
        {"id": "wait", "type": "wait_event", "event": "payment_received"},
        {"id": "done", "type": "ai", "model": {"provider": "builtin", "reply": "thanks"}},
    )
    with client_for(live, tenant) as client:
        first = list(client.execute_stream(str(agent.id), message="go"))
        assert first[-1].type == "suspended"
        execution_id = first[0].execution_id
        assert client.get_execution(execution_id).state == "awaiting_approval"
        after_gate = client.approve(execution_id, "ok")
        assert after_gate[0].seq == first[-1].seq + 1 and after_gate[-1].type == "suspended"
        assert client.get_execution(execution_id).state == "waiting_for_external_event"
        rest = client.send_event(execution_id, "payment_received", {"amount": 5})
        assert rest[-1].type == "final" and rest[-1].status == "completed"
        whole = list(client.events(execution_id))
        assert [e.seq for e in whole] == [e.seq for e in first + after_gate + rest]


def test_upload_an_attachment_and_execute_with_it(live, tenant, agent):
    with client_for(live, tenant) as client:
        result = client.execute_with_file(str(agent.id), "describe it", "a.png", PNG, "image/png")
        assert result.status == "completed"
        inputs = client.get_execution(result.execution_id).inputs
        assert inputs["attachments"][0]["content_type"] == "image/png"


def test_batch_with_per_item_results(live, tenant, agent):
    with client_for(live, tenant) as client:
        results = client.batch(str(agent.id), [{"key": "a", "message": "one"}, {"key": "b", "message": "two"}])
    assert set(results) == {"a", "b"}
    assert all(r.status == "completed" and r.model_extra["output"]["text"] == WORDS_20 for r in results.values())


# --- the skills API, personal files and the query API -----------------------------------------------


def test_skills_files_and_query(live, tenant):
    SkillFactory(
        workspace=tenant.workspace,
        slug="echo",
        manifest={"inputs_schema": {"type": "object"}, "model": {"provider": "builtin", "reply": "done"}},
    )
    with client_for(live, tenant, kind="workspace") as client:
        upload = client.upload_file("notes.md", b"# notes\n", "text/markdown")
        assert [f.filename for f in client.list_files()] == ["notes.md"] == [client.get_file("notes.md").filename]
        started = client.start_skill("echo", {"topic": "x"}, file_source_ids=[upload.filename])
        assert started.skill_slug == "echo" and started.idempotency_key
        events = list(client.skill_events(started.id))
        assert events[-1].type == "final"
        finished = client.get_skill_execution(started.id)
        assert finished.state == "completed"
        page = client.list_skill_executions(skill="echo")
        assert [e.id for e in page.data] == [started.id] and page.pagination.total == 1
        with pytest.raises(NotFoundError):
            client.skill_execution_by_chat_tool_call("call_nope")
        with pytest.raises(SkillrunError) as finished_cancel:
            client.cancel_skill_execution(started.id)
        assert finished_cancel.value.status == 409

        queried = client.query_executions(page_size=5)
        assert queried.total_count == 1 and queried.items[0].detail.type == "skill"
        one = client.query_execution(queried.items[0].id)
        assert one.status == "completed" and one.detail.usage is not None
        nesting = client.query_nestings(execution_id=one.id)
        assert nesting.id == one.id and nesting.children == []
        purged = client.purge_execution(one.id)
        assert purged.is_purged
        client.delete_file("notes.md")
        assert client.list_files() == []


def test_cancel_a_running_execution(live, tenant, streaming_agent):
    with client_for(live, tenant) as client:
        stream = client.execute_stream(str(streaming_agent.id), message="hi")
        first = next(stream)
        cancelled = client.cancel_execution(first.execution_id)
        assert cancelled.cancel_requested or cancelled.state == "cancelled"
        rest = list(stream)
        assert rest[-1].type in ("final", "error")


def test_conversations_memory_credits_and_artifacts(live, tenant, agent):
    MemoryFact.objects.create(workspace=tenant.workspace, external_user_id="uid_1", content="prefers French")
    SkillFactory(
        workspace=tenant.workspace,
        slug="writer",
        manifest={
            "inputs_schema": {"type": "object"},
            "tools": ["write_file"],
            "model": {
                "provider": "builtin",
                "script": [
                    {"tool_calls": [{"name": "write_file", "arguments": {"path": "outputs/a.md", "content": "# A"}}]},
                    {"text": "written"},
                ],
            },
        },
    )
    with client_for(live, tenant) as client:
        assert [(a.id, a.name) for a in client.list_agents()] == [(f"agent:{agent.id}", agent.name)]
        conversation = client.open_conversation(f"agent:{agent.id}")
        assert client.open_conversation(f"agent:{agent.id}").id == conversation.id  # the active one
        assert [c.id for c in client.list_conversations(state="active")] == [conversation.id]
        client.execute(str(agent.id), message="hello", conversation_scope=conversation.id)
        page = client.conversation_messages(conversation.id, limit=10)
        assert [m.role for m in page.data] == ["user", "assistant"] and page.pagination.total == 2
        assert client.message_feedback(conversation.id, page.data[1].id, -1).value == -1
        assert client.archive_conversation(conversation.id).state == "archived"
        preview = client.preview_credits(str(agent.id), inputs={"message": "hi"})
        assert preview.total == 0 and preview.rules == []
    with client_for(live, tenant, kind="workspace") as client:
        facts = client.user_memory("uid_1")
        assert [f.content for f in facts] == ["prefers French"]
        assert client.forget_fact("uid_1", facts[0].id) is None
        assert client.forget_user("uid_1").deleted == 0
        run = client.start_skill("writer", {})
        list(client.skill_events(run.id))
        artifact = client.get_skill_execution(run.id).artifacts[0]
        assert artifact.relpath_in_workspace == "outputs/a.md"
        assert client.download_artifact(artifact.download_url) == b"# A"
