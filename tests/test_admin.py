"""The operators' admin: executions with events and children, search, cancel; keys without secrets."""

import pytest
from django.contrib.auth.models import User

from accounts.models import ApiKey
from executions.events import append_event
from executions.models import ExecutionState
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    return client


@pytest.fixture
def execution(tenant, agent):
    parent = ExecutionFactory(agent=agent, idempotency_key="idem-123", chat_tool_call_id="tc_abc")
    append_event(parent, "start", {"status": "queued"})
    append_event(parent, "text", {"text": "hello there"})
    ExecutionFactory(parent=parent)
    return parent


def test_execution_page_shows_events_and_sub_executions(admin_client, execution):
    page = admin_client.get(f"/admin/executions/execution/{execution.id}/change/").content.decode()
    assert "hello there" in page
    assert "sub-execution" in page.lower()
    assert str(execution.children.get().id) in page


@pytest.mark.parametrize("term", ["{id}", "execution:{id}", "idem-123", "tc_abc"])
def test_search_by_id_idempotency_key_and_chat_tool_call_id(admin_client, execution, term):
    response = admin_client.get("/admin/executions/execution/", {"q": term.format(id=execution.id)})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_filters(admin_client, execution):
    for query in ({"state": "queued"}, {"source": "api"}, {"workspace__id__exact": str(execution.workspace_id)}):
        assert admin_client.get("/admin/executions/execution/", query).status_code == 200


def test_cancel_action(admin_client, execution):
    response = admin_client.post(
        "/admin/executions/execution/", {"action": "cancel_executions", "_selected_action": [str(execution.id)]}
    )
    assert response.status_code == 302
    execution.refresh_from_db()
    assert execution.state == ExecutionState.CANCELLED


def test_api_keys_never_show_a_secret(admin_client, tenant):
    api_key = tenant.end_user_key.api_key
    page = admin_client.get(f"/admin/accounts/apikey/{api_key.id}/change/").content.decode()
    assert api_key.prefix in page
    assert api_key.secret_hash not in page and tenant.end_user_key.raw_key not in page
    listing = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert api_key.secret_hash not in listing


def test_adding_a_key_in_the_admin_shows_it_once(admin_client, tenant):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"workspace": str(tenant.workspace.id), "kind": "workspace", "name": "ci"},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    raw = next(m.split(": ")[-1] for m in messages if "not be shown again" in m)
    stored = ApiKey.objects.get(name="ci")
    assert raw.startswith(stored.prefix) and stored.secret_hash != raw


def test_revoke_action(admin_client, tenant):
    api_key = tenant.end_user_key.api_key
    admin_client.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [str(api_key.id)]})
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


def test_publishing_a_workflow_from_the_agent_page(admin_client, tenant, agent):
    url = f"/admin/agents/agent/{agent.id}/change/"
    form = {
        "workspace": str(tenant.workspace.id),
        "name": "Renamed",
        "requires_user_message": "on",
        "credit_rules": "{}",
        "agentversion_set-TOTAL_FORMS": "0",
        "agentversion_set-INITIAL_FORMS": "0",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    refused = admin_client.post(url, {**form, "publish_workflow": '{"nodes": [{"id": "a", "type": "teleport"}]}'})
    assert refused.status_code == 200 and "type must be one of" in refused.content.decode()
    workflow = '{"nodes": [{"id": "a", "type": "ai", "model": {"provider": "builtin"}}]}'
    response = admin_client.post(url, {**form, "publish_workflow": workflow})
    assert response.status_code == 302, response.content.decode()[:3000]
    agent.refresh_from_db()
    assert agent.name == "Renamed"
    assert agent.live_version.number == 2
    assert agent.live_version.workflow["nodes"][0]["id"] == "a"


def test_http_tools_are_listed(admin_client, tenant):
    from agents.models import HttpTool

    HttpTool.objects.create(workspace=tenant.workspace, name="order_status", url="https://tools.example/orders")
    assert "order_status" in admin_client.get("/admin/agents/httptool/").content.decode()


def test_skill_page_shows_the_manifest_and_publishes_a_new_one(admin_client, tenant):
    from agents.models import Skill
    from agents.services import publish_skill_version

    skill = Skill.objects.create(workspace=tenant.workspace, slug="report", name="Report")
    publish_skill_version(skill, {"instructions": "Write it.", "inputs_schema": {"type": "object"}})
    url = f"/admin/agents/skill/{skill.id}/change/"
    assert "Write it." in admin_client.get(url).content.decode()
    form = {
        "workspace": str(tenant.workspace.id),
        "slug": "report",
        "name": "Report",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    refused = admin_client.post(url, {**form, "publish_manifest": '{"inputs_schema": {"type": "nonsense"}}'})
    assert "not a valid JSON Schema" in refused.content.decode()
    assert admin_client.post(url, {**form, "publish_manifest": '{"instructions": "v2"}'}).status_code == 302
    skill.refresh_from_db()
    assert skill.live_version.number == 2 and skill.live_version.manifest == {"instructions": "v2"}


def test_execution_page_shows_artifacts_with_download_links_and_the_tree(admin_client, execution, settings, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from executions.models import Artifact

    key = default_storage.save(f"workspaces/{execution.id}/outputs/report.md", ContentFile(b"# hi"))
    artifact = Artifact.objects.create(
        execution=execution,
        relpath_in_workspace="outputs/report.md",
        document_type="text/markdown",
        size_bytes=4,
        storage_key=key,
    )
    child = execution.children.get()
    ExecutionFactory(parent=child)
    page = admin_client.get(f"/admin/executions/execution/{execution.id}/change/").content.decode()
    assert "outputs/report.md" in page
    download_url = f"/admin/executions/execution/artifact/{artifact.id}/download/"
    assert download_url in page
    assert b"".join(admin_client.get(download_url).streaming_content) == b"# hi"
    assert str(child.id) in page and str(child.children.get().id) in page  # two levels of the tree
    default_storage.delete(key)


def test_model_aliases_on_the_workspace_page(admin_client, tenant):
    from accounts.models import ModelAlias

    ModelAlias.objects.create(workspace=tenant.workspace, alias="fast", provider="builtin")
    page = admin_client.get(f"/admin/accounts/workspace/{tenant.workspace.id}/change/").content.decode()
    assert "fast" in page and "default_model_alias" in page


def test_conversations_and_memory_pages(admin_client, tenant, agent):
    from conversations.models import Conversation, MemoryFact, Message

    conversation = Conversation.objects.create(
        workspace=tenant.workspace, agent=agent, principal=tenant.end_user_key.api_key.principal
    )
    Message.objects.create(conversation=conversation, role="user", content="hello there")
    MemoryFact.objects.create(workspace=tenant.workspace, external_user_id="uid_7", content="likes tea")
    assert (
        "hello there"
        in admin_client.get(f"/admin/conversations/conversation/{conversation.id}/change/").content.decode()
    )
    assert "likes tea" in admin_client.get("/admin/conversations/memoryfact/").content.decode()


def test_the_workspace_page_names_its_model_aliases(admin_client, tenant):
    page = admin_client.get(f"/admin/accounts/workspace/{tenant.workspace.id}/change/").content.decode()
    assert "Model aliases" in page and "aliass" not in page.lower()
