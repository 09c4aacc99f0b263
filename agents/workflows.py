"""The shape of an agent version's workflow: {"nodes": [{"id", "type", ...options}, ...]}, run in
order. The node types and their options are documented in workers/nodes.py."""

from accounts.model_keys import DisallowedKeyEnv, check_api_key_env

NODE_TYPES = {"ai", "tool", "human_gate", "wait_event", "media_generation", "agent", "skill"}
REQUIRED_OPTIONS = {"tool": ("tool",), "agent": ("agent_id",), "skill": ("skill",)}


class InvalidWorkflow(ValueError):
    pass


def validate_workflow(workflow) -> None:
    """Refuse a workflow the runtime could not run, before it is published."""
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise InvalidWorkflow('A workflow is {"nodes": [...]} with at least one node.')
    seen = set()
    for index, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str) or not node["id"]:
            raise InvalidWorkflow(f"nodes[{index}] needs a string id.")
        if node["id"] in seen:
            raise InvalidWorkflow(f"The node id {node['id']!r} is used twice.")
        seen.add(node["id"])
        if node.get("type") not in NODE_TYPES:
            raise InvalidWorkflow(f"nodes[{index}]: type must be one of {', '.join(sorted(NODE_TYPES))}.")
        for option in REQUIRED_OPTIONS.get(node["type"], ()):
            if not node.get(option):
                raise InvalidWorkflow(f"nodes[{index}] ({node['type']}) needs {option!r}.")
        if not isinstance(node.get("tools", []), list):
            raise InvalidWorkflow(f"nodes[{index}]: tools must be a list of tool names.")
        try:
            check_api_key_env(node.get("model"))
        except DisallowedKeyEnv as exc:
            raise InvalidWorkflow(f"nodes[{index}].model: {exc}") from None
