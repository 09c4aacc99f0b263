"""Reads of the agents app."""

from agents.models import Agent
from core.errors import ApiError, not_found
from core.ids import parse_prefixed_id


def get_live_agent(workspace, agent_id: str) -> Agent:
    """The workspace's agent with its live version; 404 for another workspace's, 409 if unpublished."""
    parsed = parse_prefixed_id(agent_id, "agent")
    agent = (
        Agent.objects.select_related("live_version").filter(id=parsed, workspace=workspace).first() if parsed else None
    )
    if agent is None:
        raise not_found("agent")
    if agent.live_version is None:
        raise ApiError(409, "agent_not_published", "The agent has no published version.")
    return agent


def skill_tool_name(slug: str) -> str:
    """The tool an agent's `skills` entry becomes (tool names have no dashes)."""
    return slug.replace("-", "_")


def server_tool_names(workflow: dict) -> set[str]:
    """The server-side tools an agent version's workflow can call (ai nodes' tools and skills, tool nodes)."""
    names = set()
    for node in workflow.get("nodes", []):
        for tool in node.get("tools", []):
            names.add(tool if isinstance(tool, str) else tool.get("name"))
        if node.get("type") == "tool" and node.get("tool"):
            names.add(node["tool"])
        names.update(skill_tool_name(slug) for slug in node.get("skills", []))
    names.discard(None)
    return names


def published_agents(workspace) -> list[Agent]:
    """The workspace's agents that can be executed (a live version), by name: what a caller may pick."""
    return list(
        Agent.objects.select_related("live_version")
        .filter(workspace=workspace, live_version__isnull=False)
        .order_by("name", "created_at")
    )


def accepts_client_tools(workflow: dict) -> bool:
    """Whether an execute request's `client_tools` reach the model (an `ai` node accepts them)."""
    return any(node.get("type") == "ai" and node.get("accepts_client_tools") for node in workflow.get("nodes", []))
