"""GET /agents: the workspace's published agents, for a caller that picks one (the front door)."""

from agents.models import Agent
from tests.factories import AgentFactory
from tests.helpers import auth


def test_lists_the_workspaces_published_agents_by_name_for_either_key(api, tenant, other_tenant, workflow_agent):
    tools = workflow_agent({"id": "a", "type": "ai", "accepts_client_tools": True, "model": {"provider": "builtin"}})
    tools.name = "Bookkeeper"
    tools.save(update_fields=["name"])
    plain = AgentFactory(workspace=tenant.workspace, name="Assistant")
    Agent.objects.create(workspace=tenant.workspace, name="Draft")  # no published version: cannot be executed
    AgentFactory(workspace=other_tenant.workspace, name="Globex agent")
    for kind in ("end_user", "workspace"):
        response = api.get("/agents", headers=auth(tenant, kind))
        assert response.status_code == 200, response.text
        assert response.headers["X-Workspace-Id"] == f"workspace:{tenant.workspace.id}"
        agents = response.json()["data"]
        assert [(a["id"], a["name"], a["accepts_client_tools"]) for a in agents] == [
            (f"agent:{plain.id}", "Assistant", False),
            (f"agent:{tools.id}", "Bookkeeper", True),
        ]
        assert all(a["requires_user_message"] is True and a["created_at"] for a in agents)
    assert [a["name"] for a in api.get("/agents", headers=auth(other_tenant)).json()["data"]] == ["Globex agent"]


def test_needs_a_key(api):
    response = api.get("/agents")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"
    assert api.get("/agents", headers={"X-API-Key": "eak_nope"}).status_code == 401


def test_an_empty_workspace_lists_nothing(api, tenant):
    assert api.get("/agents", headers=auth(tenant)).json() == {"data": []}


def test_a_nul_in_the_query_is_the_documented_400(api, tenant):
    response = api.get("/agents?x=a%00b", headers=auth(tenant))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_query_parameter"
