"""Conversations: create-or-resume, archive, history injected into the model, persistence,
feedback; per-user memory."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from accounts.models import ApiKeyKind
from accounts.services import issue_api_key
from conversations.models import Conversation, MemoryFact, Message
from tests.factories import AgentFactory
from tests.helpers import auth, data_of, execute

ECHO = {"provider": "builtin", "script": [{"text": "{{messages}}"}]}  # answers with what it received


@pytest.fixture
def chat_agent(tenant):
    def make(model=ECHO, tools=(), workspace=None):
        workflow = {"nodes": [{"id": "chat", "type": "ai", "model": model, "tools": list(tools)}]}
        return AgentFactory(workspace=workspace or tenant.workspace, name="chat", workflow=workflow)

    return make


def open_conversation(client, tenant, agent, **headers):
    return client.post(
        "/my/conversations",
        data={"agent_id": f"agent:{agent.id}"},
        content_type="application/json",
        headers={**auth(tenant), **headers},
    )


# --- create, resume, archive -------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_then_resume_then_archive_then_new(client, tenant, chat_agent):
    agent = chat_agent()
    first = open_conversation(client, tenant, agent)
    assert first.status_code == 201
    data = first.json()["data"]
    assert data["id"].startswith("conversation:") and data["agent_id"] == f"agent:{agent.id}"
    assert data["state"] == "active"
    again = open_conversation(client, tenant, agent)
    assert again.status_code == 200 and again.json()["data"]["id"] == data["id"]
    archived = client.post(f"/my/conversations/{data['id']}/archive", headers=auth(tenant))
    assert archived.status_code == 200 and archived.json()["data"]["state"] == "archived"
    fresh = open_conversation(client, tenant, agent)
    assert fresh.status_code == 201 and fresh.json()["data"]["id"] != data["id"]
    listed = client.get("/my/conversations", headers=auth(tenant)).json()["data"]
    assert [c["state"] for c in listed] == ["active", "archived"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_make_one_active_conversation(live, tenant, chat_agent):
    agent = chat_agent()

    def create(_):
        return httpx.post(
            f"{live}/my/conversations", json={"agent_id": str(agent.id)}, headers=auth(tenant), timeout=30
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(create, range(20)))
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert {r.json()["data"]["id"] for r in responses} == {f"conversation:{Conversation.objects.get().id}"}


@pytest.mark.django_db
def test_archived_or_foreign_conversations_cannot_be_executed_against(client, tenant, chat_agent):
    agent, other_agent = chat_agent(), chat_agent()
    conversation = open_conversation(client, tenant, agent).json()["data"]["id"]

    def post(agent_, scope, headers=None):
        return client.post(
            f"/agents/{agent_.id}/execute/stream",
            data={"message": "hi", "conversation_scope": scope},
            content_type="application/json",
            headers=headers or auth(tenant),
        )

    assert post(other_agent, conversation).json()["error"]["code"] == "conversation_agent_mismatch"
    someone = issue_api_key(tenant.workspace, ApiKeyKind.END_USER)
    assert post(agent, conversation, {"X-API-Key": someone.raw_key}).status_code == 404
    assert post(agent, "conversation:00000000-0000-4000-8000-000000000000").status_code == 404
    client.post(f"/my/conversations/{conversation}/archive", headers=auth(tenant))
    archived = post(agent, conversation)
    assert archived.status_code == 409 and archived.json()["error"]["code"] == "conversation_archived"


# --- history, persistence ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_history_is_replayed_in_order_without_system_messages(api, client, tenant, chat_agent):
    agent = chat_agent()
    scope = open_conversation(client, tenant, agent).json()["data"]["id"]
    first = data_of(execute(api, agent, tenant, "hello", conversation_scope=scope))
    assert json.loads(first["output"]["text"]) == [{"role": "user", "content": "hello"}]
    conversation = Conversation.objects.get()
    Message.objects.create(conversation=conversation, role="system", content="a platform note")

    second = data_of(execute(api, agent, tenant, "and again?", conversation_scope=scope))
    received = json.loads(second["output"]["text"])
    assert received == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first["output"]["text"]},
        {"role": "user", "content": "and again?"},
    ]
    messages = client.get(f"/my/conversations/{scope}/messages", headers=auth(tenant)).json()
    assert [m["role"] for m in messages["data"]] == ["user", "assistant", "system", "user", "assistant"]
    assert messages["pagination"]["total"] == 5
    assert all(m["id"].startswith("message:") and m["created_at"] for m in messages["data"])
    page = client.get(f"/my/conversations/{scope}/messages", {"limit": 2, "offset": 2}, headers=auth(tenant)).json()
    assert [m["role"] for m in page["data"]] == ["system", "user"]
    assert client.get(f"/my/conversations/{scope}/messages", {"limit": 0}, headers=auth(tenant)).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_tool_results_are_stored_and_a_failure_stores_only_a_system_message(api, client, tenant, chat_agent):
    agent = chat_agent(
        {
            "provider": "builtin",
            "script": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                {"text": "It is 4."},
            ],
        },
        tools=["calculator"],
    )
    scope = open_conversation(client, tenant, agent).json()["data"]["id"]
    data_of(execute(api, agent, tenant, "2+2?", conversation_scope=scope))
    assert [(m.role, m.content) for m in Message.objects.order_by("id")] == [
        ("user", "2+2?"),
        ("tool", json.dumps({"outcome": "success", "result": {"value": 4}})),
        ("assistant", "It is 4."),
    ]

    failing = chat_agent({"provider": "builtin", "reply": "a b c d", "fail": "the model broke"})
    failing_scope = open_conversation(client, tenant, failing).json()["data"]["id"]
    assert data_of(execute(api, failing, tenant, "hi", conversation_scope=failing_scope))["status"] == "failed"
    stored = Message.objects.filter(conversation_id=failing_scope.removeprefix("conversation:"))
    assert [m.role for m in stored] == ["system"] and "the model broke" in stored[0].content


@pytest.mark.django_db
def test_history_is_trimmed_to_the_budget(tenant, chat_agent, settings):
    from conversations.selectors import history_for_model

    conversation = Conversation.objects.create(
        workspace=tenant.workspace, principal=tenant.end_user_key.api_key.principal, agent=chat_agent()
    )
    for index in range(6):
        Message.objects.create(conversation=conversation, role="user", content=f"q{index}")
        Message.objects.create(conversation=conversation, role="tool", content="{}", tool_call_id=f"t{index}")
        Message.objects.create(conversation=conversation, role="assistant", content=f"a{index}")
    settings.CONVERSATION_HISTORY_MAX_MESSAGES = 4  # the newest 4: tool, a4, q5... but never starting with a tool
    assert [m["content"] for m in history_for_model(conversation.id)] == ["a4", "q5", "{}", "a5"]
    settings.CONVERSATION_HISTORY_MAX_MESSAGES = 50
    settings.CONVERSATION_HISTORY_MAX_CHARS = 8  # "a5" "{}" "q5" "a4" = 8 characters
    assert [m["content"] for m in history_for_model(conversation.id)] == ["a4", "q5", "{}", "a5"]


# --- feedback ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_feedback_is_one_per_principal_and_changeable(client, tenant, other_tenant, chat_agent):
    agent = chat_agent()
    scope = open_conversation(client, tenant, agent).json()["data"]["id"]
    message = Message.objects.create(conversation_id=scope.removeprefix("conversation:"), role="assistant", content="x")
    url = f"/my/conversations/{scope}/messages/{message.public_id}/feedback"
    for value in (1, -1):
        response = client.post(url, data={"value": value}, content_type="application/json", headers=auth(tenant))
        assert response.status_code == 200 and response.json()["data"]["value"] == value
    assert message.feedback.get().value == -1
    for bad in (0, 2, "1", True, None):
        response = client.post(url, data={"value": bad}, content_type="application/json", headers=auth(tenant))
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_feedback"
    assert (
        client.post(url, data={"value": 1}, content_type="application/json", headers=auth(other_tenant)).status_code
        == 404
    )
    missing = url.replace(message.public_id, "message:999999")
    assert (
        client.post(missing, data={"value": 1}, content_type="application/json", headers=auth(tenant)).status_code
        == 404
    )


# --- memory -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_memory_is_injected_updated_by_the_tool_and_forgotten(api, client, tenant, chat_agent):
    MemoryFact.objects.create(workspace=tenant.workspace, external_user_id="uid_1", content="prefers French")
    echo = chat_agent()
    wak = auth(tenant, "workspace")  # acts for any user of the workspace (an end user: tests/test_user_lanes.py)
    received = json.loads(data_of(execute(api, echo, headers=wak, external_user_id="uid_1"))["output"]["text"])
    assert received[0]["role"] == "system" and "prefers French" in received[0]["content"]
    assert len(json.loads(data_of(execute(api, echo, headers=wak, external_user_id="uid_2"))["output"]["text"])) == 1

    rememberer = chat_agent(
        {
            "provider": "builtin",
            "script": [
                {"tool_calls": [{"name": "memory", "arguments": {"action": "remember", "fact": "has a dog"}}]},
                {"text": "noted"},
            ],
        },
        tools=["memory"],
    )
    data_of(execute(api, rememberer, message="I have a dog", headers=wak, external_user_id="uid_1"))
    facts = api.get("/users/uid_1/memory", headers=wak).json()["data"]
    assert [f["content"] for f in facts] == ["prefers French", "has a dog"]
    assert api.get("/users/uid_1/memory", headers=auth(tenant)).status_code == 403
    assert api.delete(f"/users/uid_1/memory/{facts[0]['id']}", headers=wak).status_code == 204
    assert api.delete(f"/users/uid_1/memory/{facts[0]['id']}", headers=wak).status_code == 404
    assert api.delete("/users/uid_1/memory", headers=wak).json()["data"] == {"deleted": 1}
    assert not MemoryFact.objects.exists()


@pytest.mark.django_db
def test_memory_of_another_workspace_is_invisible(client, tenant, other_tenant):
    MemoryFact.objects.create(workspace=other_tenant.workspace, external_user_id="uid_1", content="secret")
    assert client.get("/users/uid_1/memory", headers=auth(tenant, "workspace")).json()["data"] == []
    assert client.delete("/users/uid_1/memory", headers=auth(tenant, "workspace")).json()["data"] == {"deleted": 0}
    assert MemoryFact.objects.count() == 1


# --- scoping -----------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/my/conversations/{cid}/archive"),
        ("get", "/my/conversations/{cid}/messages"),
    ],
)
def test_other_tenants_and_other_end_users_get_404(client, tenant, other_tenant, chat_agent, method, path):
    cid = open_conversation(client, tenant, chat_agent()).json()["data"]["id"]
    someone = issue_api_key(tenant.workspace, ApiKeyKind.END_USER)
    for headers in (auth(other_tenant), {"X-API-Key": someone.raw_key}):
        assert getattr(client, method)(path.format(cid=cid), headers=headers).status_code == 404
    assert (
        client.post(
            "/my/conversations",
            data={"agent_id": str(Conversation.objects.get().agent_id)},
            content_type="application/json",
            headers=auth(other_tenant),
        ).status_code
        == 404
    )
    assert client.get("/my/conversations", headers=auth(other_tenant)).json()["data"] == []
