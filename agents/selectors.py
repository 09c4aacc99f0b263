"""Reads of the agents app."""


def server_tool_names(workflow: dict) -> set[str]:
    """The server-side tools an agent version's workflow can call (ai nodes' tools, tool nodes)."""
    names = set()
    for node in workflow.get("nodes", []):
        for tool in node.get("tools", []):
            names.add(tool if isinstance(tool, str) else tool.get("name"))
        if node.get("type") == "tool" and node.get("tool"):
            names.add(node["tool"])
    names.discard(None)
    return names
