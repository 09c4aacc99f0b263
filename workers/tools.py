"""Server tools: Python tools registered here, plus HTTP tools configured per workspace.

A tool gets JSON arguments (checked against its JSON Schema) and returns a JSON result; a failure
is a result with outcome "error" that the model sees, not an exception of the run.
"""

import ast
import math
import operator
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from accounts.selectors import may_act_for_user
from agents.models import HttpTool
from conversations.services import forget, remember
from webhooks.transport import BlockedAddress, GuardedHTTPTransport
from workers.server_tool import ServerTool, ToolError, local_tool, secret_values
from workers.skill_workspace import workspace_tools

PYTHON_TOOLS: dict[str, ServerTool] = {}


def python_tool(name: str, description: str, parameters: dict):
    def register(function):
        PYTHON_TOOLS[name] = local_tool(name, description, parameters, function)
        return function

    return register


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ToolError("Only numbers and + - * / // % are allowed.")


@python_tool(
    "calculator",
    "Evaluate an arithmetic expression such as (2 + 3) * 4.",
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "maxLength": 500}},
        "required": ["expression"],
        "additionalProperties": False,
    },
)
def calculator(arguments: dict):
    """Every failure is a tool error: `9...9 * 1.0` overflows a float, deep nesting the parser, and
    `1e308 * 10` gives an infinity, which JSON cannot carry (core/json.py)."""
    try:
        value = _evaluate(ast.parse(arguments["expression"], mode="eval"))
    except (SyntaxError, ZeroDivisionError, ValueError) as exc:
        raise ToolError(str(exc)) from exc
    except OverflowError:
        raise ToolError("The result is too large for a number.") from None
    except (RecursionError, MemoryError):
        raise ToolError("The expression is nested too deeply.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("The result is not a finite number.")
    return {"value": value}


@python_tool(
    "current_time",
    "The current date and time in UTC (ISO 8601).",
    {"type": "object", "properties": {}, "additionalProperties": False},
)
def current_time(arguments: dict):
    return {"utc": datetime.now(UTC).isoformat()}


def _http_tool(tool: HttpTool) -> ServerTool:
    """The configured headers and the URL's query values are the tool's secrets: call_tool redacts
    them from what the receiver answers (a server may echo the request), and a failed request is
    reported by its kind only (an exception's text may hold the URL or a header). The request goes
    through the webhooks' SSRF guard (webhooks/transport.py): to the public address that was checked,
    unless the tool's `allow_private_network` lets it reach an internal host; never through a proxy
    of the environment, never following a redirect."""

    def call(arguments: dict, idempotency_key: str):
        try:
            headers = httpx.Headers(tool.headers)
            headers["Idempotency-Key"] = idempotency_key  # ours, even if the configuration names one
            transport = GuardedHTTPTransport(allow_private=tool.allow_private_network, timeout=tool.timeout_seconds)
            with httpx.Client(transport=transport, trust_env=False, timeout=tool.timeout_seconds) as client:
                if tool.method == "GET":
                    response = client.get(tool.url, params=arguments, headers=headers)
                else:
                    response = client.post(tool.url, json=arguments, headers=headers)
        except BlockedAddress:
            raise ToolError(
                f"{tool.name}: blocked_address (its host is not a public address; an operator may allow "
                "private networks for this tool)"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ToolError(f"{tool.name}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ToolError(f"{tool.name} answered HTTP {response.status_code}: {response.text}")
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}

    query_values = [value for _, value in parse_qsl(urlsplit(tool.url).query)]
    secrets = secret_values([*tool.headers.values(), *query_values, *(quote(v, safe="") for v in query_values)])
    return ServerTool(tool.name, tool.description, tool.parameters or {"type": "object"}, call, secrets)


def memory_user(execution) -> str | None:
    """The user whose memory this execution reads and writes: its `external_user_id`, if its caller
    may act for that user (an end user only for itself: the API refuses another one, and this
    keeps a run from before that rule, or a copy of one, out of another user's memory)."""
    user = (execution.inputs or {}).get("external_user_id")
    if not user or not may_act_for_user(execution.principal, user):
        return None
    return user


def _memory_tool(execution, user: str) -> ServerTool:
    """`memory`: what the agent learns about the user (`external_user_id`) lasts across executions."""

    def call(arguments: dict):
        if arguments["action"] == "remember":
            if not arguments.get("fact"):
                raise ToolError("remember needs a fact.")
            fact = remember(execution.workspace_id, user, arguments["fact"][:2000], execution.id)
            return {"remembered": str(fact.id)}
        try:
            forgotten = forget(execution.workspace_id, user, uuid.UUID(str(arguments.get("fact_id"))))
        except ValueError:
            raise ToolError("forget needs the fact_id of a remembered fact.") from None
        return {"forgotten": forgotten}

    return local_tool(
        "memory",
        "Remember a fact about the user for later conversations, or forget one.",
        {
            "type": "object",
            "required": ["action"],
            "properties": {
                "action": {"enum": ["remember", "forget"]},
                "fact": {"type": "string"},
                "fact_id": {"type": "string"},
            },
        },
        call,
    )


def server_tools(execution, names, skill_workspace=None) -> dict[str, ServerTool]:
    """The named tools a node of this execution may call: a workspace's HTTP tool wins over a Python
    tool; a skill's workspace tools (list_files, read_file, ...) and the memory tool (for executions
    with an `external_user_id`) win over both."""
    names = list(names)
    tools = {name: PYTHON_TOOLS[name] for name in names if name in PYTHON_TOOLS}
    for tool in HttpTool.objects.filter(workspace_id=execution.workspace_id, name__in=names):
        tools[tool.name] = _http_tool(tool)
    if "memory" in names and (user := memory_user(execution)):
        tools["memory"] = _memory_tool(execution, user)
    if skill_workspace is not None:
        tools.update({name: tool for name, tool in workspace_tools(skill_workspace).items() if name in names})
    return tools
