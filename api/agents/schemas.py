"""The execute request body of spec/agents-execute.txt, validated field by field.

Every failure is a 400 with a stable `code` and the `field` at fault. Limits: `message` 1-65,536
characters; at most 10 `attachments`, each an uploaded `storage_key` of this workspace;
`variables` an object of at most 16 KiB as compact UTF-8 JSON; at most 32 `client_tools`, names
matching ^[a-z][a-z0-9_]{0,63}$, unique, and not one of the agent's server tools. A batch's
items are execute requests with a `key`.
"""

import json
import re

from agents.selectors import server_tool_names
from core.errors import ApiError
from files.models import StoredFile

MAX_MESSAGE_CHARS = 65_536
MAX_ATTACHMENTS = 10
MAX_VARIABLES_BYTES = 16 * 1024
MAX_CLIENT_TOOLS = 32
CLIENT_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_ID_CHARS = 255


def _invalid(code: str, message: str, field: str) -> ApiError:
    return ApiError(400, code, message, field=field)


def parse_json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    return body


def _message(body, agent) -> str | None:
    message = body.get("message")
    if message is None:
        if agent.requires_user_message:
            raise _invalid("message_required", "This agent requires a message.", "message")
        return None
    if not isinstance(message, str) or not 1 <= len(message) <= MAX_MESSAGE_CHARS:
        raise _invalid(
            "invalid_message", f"message must be a string of 1 to {MAX_MESSAGE_CHARS} characters.", "message"
        )
    return message


def _attachments(body, workspace) -> list[dict]:
    attachments = body.get("attachments")
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        raise _invalid("invalid_attachments", "attachments must be a list.", "attachments")
    if len(attachments) > MAX_ATTACHMENTS:
        raise _invalid("too_many_attachments", f"At most {MAX_ATTACHMENTS} attachments.", "attachments")
    keys = []
    for index, item in enumerate(attachments):
        if not isinstance(item, dict) or not isinstance(item.get("storage_key"), str) or not item["storage_key"]:
            raise _invalid(
                "invalid_attachment", "Each attachment needs a storage_key string.", f"attachments[{index}].storage_key"
            )
        keys.append(item["storage_key"])
    stored = {f.storage_key: f for f in StoredFile.objects.filter(workspace=workspace, storage_key__in=keys)}
    for index, key in enumerate(keys):
        if key not in stored:
            raise _invalid(
                "attachment_not_found",
                f"No uploaded file {key!r} in this workspace.",
                f"attachments[{index}].storage_key",
            )
    return [
        {
            "storage_key": key,
            "filename": stored[key].filename,
            "content_type": stored[key].content_type,
            "size_bytes": stored[key].size_bytes,
        }
        for key in keys
    ]


def _variables(body) -> dict | None:
    variables = body.get("variables")
    if variables is None:
        return None
    if not isinstance(variables, dict):
        raise _invalid("invalid_variables", "variables must be an object.", "variables")
    size = len(json.dumps(variables, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_VARIABLES_BYTES:
        raise _invalid("variables_too_large", f"variables is {size} bytes; at most {MAX_VARIABLES_BYTES}.", "variables")
    return variables


def _client_tools(body, agent_version) -> list[dict]:
    tools = body.get("client_tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("invalid_client_tools", "client_tools must be a list.", "client_tools")
    if len(tools) > MAX_CLIENT_TOOLS:
        raise _invalid("too_many_client_tools", f"At most {MAX_CLIENT_TOOLS} client tools.", "client_tools")
    server_tools = server_tool_names(agent_version.workflow)
    seen = set()
    for index, tool in enumerate(tools):
        field = f"client_tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid("invalid_client_tool", "Each client tool must be an object.", field)
        name = tool.get("name")
        if not isinstance(name, str) or not CLIENT_TOOL_NAME.match(name):
            raise _invalid("invalid_client_tool_name", "Tool names must match ^[a-z][a-z0-9_]{0,63}$.", f"{field}.name")
        if name in server_tools:
            raise _invalid(
                "client_tool_name_collision", f"{name!r} is one of the agent's server tools.", f"{field}.name"
            )
        if name in seen:
            raise _invalid("duplicate_client_tool", f"{name!r} is defined twice.", f"{field}.name")
        seen.add(name)
        if not isinstance(tool.get("description", ""), str):
            raise _invalid("invalid_client_tool", "description must be a string.", f"{field}.description")
        if not isinstance(tool.get("parameters", {}), dict):
            raise _invalid("invalid_client_tool", "parameters must be a JSON Schema object.", f"{field}.parameters")
    return [
        {"name": t["name"], "description": t.get("description", ""), "parameters": t.get("parameters", {})}
        for t in tools
    ]


def _short_string(body, field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise _invalid(f"invalid_{field}", f"{field} must be a string of 1 to {MAX_ID_CHARS} characters.", field)
    return value


def parse_execute_inputs(body: dict, agent, workspace) -> dict:
    """The execution's `inputs`: only the fields the request set, validated and normalized."""
    inputs = {
        "message": _message(body, agent),
        "attachments": _attachments(body, workspace),
        "variables": _variables(body),
        "conversation_scope": _short_string(body, "conversation_scope"),
        "external_user_id": _short_string(body, "external_user_id"),
        "client_tools": _client_tools(body, agent.live_version),
    }
    return {key: value for key, value in inputs.items() if value not in (None, [])}


MAX_BATCH_KEY_CHARS = 128


def parse_batch_items(body: dict, agent, workspace, max_items: int) -> list[tuple[str, dict]]:
    """`items`: 1 to `max_items` objects, each `key` (1-128 characters, unique in the batch) plus the
    fields of an execute request; errors name the item, e.g. field `items[3].message`."""
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise _invalid("items_required", "items must be a non-empty list.", "items")
    if len(items) > max_items:
        raise _invalid("too_many_items", f"A batch has at most {max_items} items.", "items")
    parsed, keys = [], set()
    for index, item in enumerate(items):
        field = f"items[{index}]"
        if not isinstance(item, dict):
            raise _invalid("invalid_item", "Each item must be an object.", field)
        key = item.get("key")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_BATCH_KEY_CHARS:
            raise _invalid(
                "invalid_item_key", f"key must be a string of 1 to {MAX_BATCH_KEY_CHARS} characters.", f"{field}.key"
            )
        if key in keys:
            raise _invalid("duplicate_item_key", f"The key {key!r} is used twice.", f"{field}.key")
        keys.add(key)
        try:
            parsed.append((key, parse_execute_inputs(item, agent, workspace)))
        except ApiError as exc:
            exc.field = f"{field}.{exc.field}" if exc.field else field
            raise
    return parsed
