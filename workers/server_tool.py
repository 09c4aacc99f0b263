"""What a server tool is, and how one is called: shared by the tools of workers/tools.py and a
skill's workspace tools (workers/skill_workspace.py)."""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema

from core import json as finite_json

REDACTED = "[redacted]"
# A secret shorter than this is no secret, and replacing it would mangle ordinary results.
MIN_SECRET_CHARS = 4
ERROR_MESSAGE_MAX_CHARS = 1000


class ToolError(Exception):
    pass


@dataclass
class ServerTool:
    name: str
    description: str
    parameters: dict
    # call(arguments, idempotency_key): the key is the same for the same call of the same execution,
    # so a step retried after a crash repeats it with the key a receiver deduplicates on.
    call: Callable[[dict, str], object]
    # Values that must never leave the tool (an HTTP tool's configured headers): redacted from its
    # result and its errors by call_tool, before they reach an event, a trace or a log.
    secrets: tuple[str, ...] = ()

    def spec(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def local_tool(name: str, description: str, parameters: dict, function: Callable[[dict], object]) -> ServerTool:
    """A tool that runs inside the worker: no request leaves it, so it needs no idempotency key."""
    return ServerTool(name, description, parameters, lambda arguments, _key: function(arguments))


def tool_idempotency_key(execution_id, tool_call_id: str) -> str:
    """The Idempotency-Key of one tool call: SHA-256 (hex) of `<execution id>:<tool call id>`, so it is
    the same on every attempt of the execution, printable ASCII whatever the model named the call."""
    return hashlib.sha256(f"{execution_id}:{tool_call_id}".encode()).hexdigest()


def redact(value, secrets: tuple[str, ...]):
    """The JSON value with every occurrence of a secret (in strings and keys) replaced."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(key, secrets): redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    return value


NON_FINITE_RESULT = "The tool's result holds NaN or an infinite number, which JSON cannot carry."


def call_tool(tool: ServerTool | None, name: str, arguments, idempotency_key: str) -> tuple[str, object]:
    """Run a tool; returns (outcome, result) with outcome "success" or "error", its secrets redacted
    (the one place a tool's result and errors pass through). A result JSON cannot carry (NaN, an
    infinity: an HTTP tool's answer may hold them) is an error the model sees, not a crash of the
    run or of the statement that would write it (core/json.py)."""
    if tool is None:
        return "error", {"message": f"Unknown tool {name!r}."}
    try:
        jsonschema.validate(arguments, tool.parameters)
        result = tool.call(arguments, idempotency_key)
        if not finite_json.is_finite(result):
            return "error", {"message": NON_FINITE_RESULT}
        return "success", redact(result, tool.secrets)
    except jsonschema.ValidationError as exc:
        return "error", {"message": f"Invalid arguments: {exc.message}"}
    except ToolError as exc:  # redacted before it is cut, so no part of a secret is left at the cut
        return "error", {"message": redact(str(exc), tool.secrets)[:ERROR_MESSAGE_MAX_CHARS]}


def secret_values(values) -> tuple[str, ...]:
    """What to redact for these configured values: each one, and the credentials of a `<scheme>
    <credentials>` value (a server may echo the token without `Bearer`), longest first."""
    found = set()
    for value in values:
        value = str(value)
        found.add(value)
        scheme, _, credentials = value.partition(" ")
        if credentials.strip():
            found.add(credentials.strip())
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True))
