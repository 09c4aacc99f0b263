"""End users stay in their own lane: with an end-user key, `external_user_id` is the key's own user
(its customer's external id, else `principal:<uuid>`); another value is a 403 `forbidden` on every
start route (execute, stream, each batch item, with a conversation), before anything is written, and
the runtime gives the prompt and the memory tool only the caller's memory. Workspace keys act for
any user of their workspace."""

import json

import pytest

from accounts.models import ApiKeyKind
from accounts.services import issue_api_key
from conversations.models import Conversation, MemoryFact
from executions.models import Execution, ExecutionEvent, ExecutionSource, ExecutionState
from executions.services import create_execution
from tests.factories import AgentFactory, CustomerFactory
from tests.helpers import auth, data_of, execute

pytestmark = pytest.mark.django_db(transaction=True)

ECHO = {"provider": "builtin", "script": [{"text": "{{messages}}"}]}  # answers with what it received
REMEMBER_DOG = {
    "provider": "builtin",
    "script": [
        {"tool_calls": [{"name": "memory", "arguments": {"action": "remember", "fact": "has a dog"}}]},
        {"text": "{{last_tool_result}}"},
    ],
}


def _key_of(workspace, customer_external_id: str | None):
    customer = CustomerFactory(workspace=workspace, external_id=customer_external_id) if customer_external_id else None
    return issue_api_key(workspace, ApiKeyKind.END_USER, name="end user", customer=customer)


def _headers(workspace, issued) -> dict:
    return {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{workspace.id}"}


@pytest.fixture
def lanes(tenant, other_tenant):
    """Alice and Bob, end users of one workspace; another Alice in another tenant; each Alice with a fact."""
    MemoryFact.objects.create(workspace=tenant.workspace, external_user_id="alice", content="alice likes tea")
    MemoryFact.objects.create(workspace=other_tenant.workspace, external_user_id="alice", content="globex secret")
    return {
        "alice": _headers(tenant.workspace, _key_of(tenant.workspace, "alice")),
        "bob": _headers(tenant.workspace, _key_of(tenant.workspace, "bob")),
        "other_alice": _headers(other_tenant.workspace, _key_of(other_tenant.workspace, "alice")),
    }


def _agent(workspace, model=ECHO, tools=()):
    workflow = {"nodes": [{"id": "chat", "type": "ai", "model": model, "tools": list(tools)}]}
    return AgentFactory(workspace=workspace, name="chat", workflow=workflow)


def _prompt(response) -> str:
    """What the echo model received, as text."""
    return json.dumps(json.loads(data_of(response)["output"]["text"]))


def _assert_forbidden(response, field: str = "external_user_id") -> None:
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "forbidden" and error["field"] == field
    assert "'bob'" in error["message"]  # names the value the caller may use


@pytest.mark.parametrize("route", ["execute", "execute/stream"])
def test_an_end_user_cannot_run_as_another_user(api, tenant, lanes, route):
    agent = _agent(tenant.workspace, tools=["memory"])
    _assert_forbidden(execute(api, agent, message="hi", route=route, headers=lanes["bob"], external_user_id="alice"))
    assert not Execution.objects.exists()
    assert list(MemoryFact.objects.filter(workspace=tenant.workspace).values_list("external_user_id", flat=True)) == [
        "alice"
    ]


def test_each_batch_item_is_checked_before_anything_starts(api, tenant, lanes):
    agent = _agent(tenant.workspace)
    items = [
        {"key": "mine", "message": "hi", "external_user_id": "bob"},
        {"key": "hers", "message": "hi", "external_user_id": "alice"},
    ]
    response = execute(api, agent, route="execute/batch", headers=lanes["bob"], body={"items": items})
    _assert_forbidden(response, "items[1].external_user_id")
    assert not Execution.objects.exists()
    response = execute(api, agent, route="execute/batch", headers=lanes["bob"], body={"items": items[:1]})
    assert response.status_code == 200


def test_a_conversation_does_not_open_another_users_lane(api, client, tenant, lanes):
    agent = _agent(tenant.workspace)
    opened = client.post(
        "/my/conversations",
        data={"agent_id": f"agent:{agent.id}"},
        content_type="application/json",
        headers=lanes["bob"],
    )
    scope = opened.json()["data"]["id"]
    response = execute(api, agent, headers=lanes["bob"], conversation_scope=scope, external_user_id="alice")
    _assert_forbidden(response)
    assert not Conversation.objects.get().messages.exists()
    assert "alice likes tea" not in _prompt(
        execute(api, agent, headers=lanes["bob"], conversation_scope=scope, external_user_id="bob")
    )


def test_an_end_user_gets_its_own_memory_and_nobody_elses(api, tenant, other_tenant, lanes):
    agent = _agent(tenant.workspace)
    assert "alice likes tea" in _prompt(execute(api, agent, headers=lanes["alice"], external_user_id="alice"))
    bobs = _prompt(execute(api, agent, headers=lanes["bob"], external_user_id="bob"))
    assert "alice likes tea" not in bobs
    # another tenant's Alice: the same id, her own workspace's memory only
    other_agent = _agent(other_tenant.workspace)
    others = _prompt(execute(api, other_agent, headers=lanes["other_alice"], external_user_id="alice"))
    assert "globex secret" in others and "alice likes tea" not in others


def test_the_memory_tool_writes_only_into_the_callers_lane(api, tenant, lanes):
    agent = _agent(tenant.workspace, model=REMEMBER_DOG, tools=["memory"])
    data_of(execute(api, agent, headers=lanes["bob"], external_user_id="bob"))
    assert set(MemoryFact.objects.values_list("external_user_id", "content")) == {
        ("alice", "alice likes tea"),
        ("alice", "globex secret"),
        ("bob", "has a dog"),
    }


def test_an_end_user_without_a_customer_is_its_principal(api, tenant, lanes):
    agent = _agent(tenant.workspace)
    issued = _key_of(tenant.workspace, None)
    headers = _headers(tenant.workspace, issued)
    own = f"principal:{issued.api_key.principal_id}"
    MemoryFact.objects.create(workspace=tenant.workspace, external_user_id=own, content="no customer here")
    assert "no customer here" in _prompt(execute(api, agent, headers=headers, external_user_id=own))
    other = f"principal:{tenant.end_user_key.api_key.principal_id}"
    refused = execute(api, agent, headers=headers, external_user_id=other)
    assert refused.status_code == 403 and own in refused.json()["error"]["message"]


def test_a_workspace_key_acts_for_any_user_of_its_workspace(api, tenant, lanes):
    agent = _agent(tenant.workspace, model=REMEMBER_DOG, tools=["memory"])
    wak = auth(tenant, "workspace")
    data_of(execute(api, agent, headers=wak, external_user_id="alice"))
    assert MemoryFact.objects.filter(workspace=tenant.workspace, external_user_id="alice").count() == 2
    echo = _agent(tenant.workspace)
    assert "has a dog" in _prompt(execute(api, echo, headers=wak, external_user_id="alice"))


def test_the_runtime_keeps_an_earlier_run_out_of_another_users_memory(api, tenant, lanes):
    """A run an end user started as another user before the API refused it (or a copy of one):
    the prompt holds none of that user's facts, and the memory tool is not there."""
    bob = issue_api_key(tenant.workspace, ApiKeyKind.END_USER, customer=CustomerFactory(workspace=tenant.workspace))

    def run_as_alice(agent) -> Execution:
        execution = create_execution(  # as the API did before; the inline runtime runs it on commit
            workspace=tenant.workspace,
            principal=bob.api_key.principal,
            source=ExecutionSource.API,
            inputs={"message": "hi", "external_user_id": "alice"},
            agent_version=agent.live_version,
        )
        execution.refresh_from_db()
        assert execution.state == ExecutionState.COMPLETED, execution.error
        return execution

    echoed = run_as_alice(_agent(tenant.workspace))
    assert "alice likes tea" not in json.dumps(echoed.outputs)
    remembered = run_as_alice(_agent(tenant.workspace, model=REMEMBER_DOG, tools=["memory"]))
    result = ExecutionEvent.objects.get(execution_id=remembered.id, type="tool_result").data
    assert result["outcome"] == "error" and "Unknown tool" in result["result"]["message"]
    assert MemoryFact.objects.filter(workspace=tenant.workspace, external_user_id="alice").count() == 1
