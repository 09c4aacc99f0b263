"""What a server tool is, and how one is called: shared by the tools of workers/tools.py and a
skill's workspace tools (workers/skill_workspace.py)."""

from collections.abc import Callable
from dataclasses import dataclass

import jsonschema


class ToolError(Exception):
    pass


@dataclass
class ServerTool:
    name: str
    description: str
    parameters: dict
    call: Callable[[dict], object]

    def spec(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def call_tool(tool: ServerTool | None, name: str, arguments) -> tuple[str, object]:
    """Run a tool; returns (outcome, result) with outcome "success" or "error"."""
    if tool is None:
        return "error", {"message": f"Unknown tool {name!r}."}
    try:
        jsonschema.validate(arguments, tool.parameters)
        return "success", tool.call(arguments)
    except jsonschema.ValidationError as exc:
        return "error", {"message": f"Invalid arguments: {exc.message}"}
    except ToolError as exc:
        return "error", {"message": str(exc)}
