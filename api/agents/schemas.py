"""The declared schemas of the execute endpoints (spec/agents-execute.txt): the request of an
execution (sync and stream), of a batch, and the sync answer.

Every failure is a 400 with a stable `code` and the `field` at fault, the same codes wherever the
body sits (a batch item's `items[3].message` fails as `invalid_message`, as a request's). Limits:
`message` 1-65,536 characters, required when the agent has `requires_user_message`; at most 10
`attachments`, each an uploaded `storage_key` the caller may attach (its own; a workspace key: any of the workspace); `variables` an object of at most
16 KiB as compact UTF-8 JSON; at most 32 `client_tools`, names matching ^[a-z][a-z0-9_]{0,63}$,
unique, and not one of the agent's server tools; a batch has 1 to BATCH_MAX_ITEMS items, each an
execute request with a unique `key`. The checks that need the agent or the workspace read them
from the parse context: `parse(ExecuteInput, body, agent=agent, caller=caller)`.
"""

from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agents.selectors import server_tool_names
from api.http.schemas import Schema, SettingLimit, invalid, json_size
from files.selectors import attachable_files

MAX_MESSAGE_CHARS = 65_536
MAX_ATTACHMENTS = 10
MAX_VARIABLES_BYTES = 16 * 1024
MAX_CLIENT_TOOLS = 32
CLIENT_TOOL_NAME = r"^[a-z][a-z0-9_]{0,63}$"
MAX_ID_CHARS = 255
MAX_BATCH_KEY_CHARS = 128


def invalid_at(loc: tuple, code: str, message: str) -> ValidationError:
    """A custom error at `loc` under the value being validated (`(3, "key")` of a list of items):
    pydantic prefixes it with the value's own location, so the field names the item."""
    return ValidationError.from_exception_data(
        "invalid", [InitErrorDetails(type=invalid(code, message), loc=loc, input=None)]
    )


class CodedSchema(Schema):
    """A schema whose fields' own failures (wrong type, missing, out of range) carry the API's codes
    wherever it is nested: `CODES[(field, pydantic error type)]`, else `CODES[field]`, and
    `CODES[""]` for a value that is not an object. Errors raised with `invalid` keep theirs.
    (The shared map names a failure after the top-level field: a batch item's would all be
    `invalid_items`.)"""

    CODES: ClassVar[dict] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _coded(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(exc.title, [cls._recoded(error) for error in exc.errors()])

    @classmethod
    def _recoded(cls, error) -> InitErrorDetails:
        context = error.get("ctx") or {}
        field = str(error["loc"][0]) if error["loc"] else ""
        code = cls.CODES.get((field, error["type"])) or cls.CODES.get(field)
        if isinstance(context.get("status"), int):  # one of ours
            return InitErrorDetails(
                type=PydanticCustomError(error["type"], error["msg"], context), loc=error["loc"], input=error["input"]
            )
        if code is None:  # not ours to name
            return InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"], ctx=context)
        return InitErrorDetails(type=invalid(code, f"{error['msg']}."), loc=error["loc"], input=error["input"])


class ExecuteAttachment(CodedSchema):
    """A file uploaded with POST /attachments/upload; the execution gets its stored name and type."""

    CODES = {"storage_key": "invalid_attachment"}

    storage_key: str = Field(min_length=1, description="From POST /attachments/upload")
    filename: Annotated[Any, Field(json_schema_extra={"type": "string"}, description="Ignored: the upload's")] = None
    content_type: Annotated[Any, Field(json_schema_extra={"type": "string"}, description="Ignored: the upload's")] = (
        None
    )

    @model_validator(mode="before")
    @classmethod
    def _object(cls, data):
        """An attachment that is not an object fails on its storage_key, like one without."""
        return data if isinstance(data, dict) else {}


class ExecuteClientTool(CodedSchema):
    """A tool the client runs: its calls suspend the execution until POST .../tool-result."""

    CODES = {
        "": "invalid_client_tool",
        "name": "invalid_client_tool_name",
        "description": "invalid_client_tool",
        "parameters": "invalid_client_tool",
    }

    name: str = Field(pattern=CLIENT_TOOL_NAME, description="Must not be one of the agent's server tools")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict, description="A JSON Schema object")


def _variables_size(variables: dict) -> dict:
    size = json_size(variables)
    if size > MAX_VARIABLES_BYTES:
        raise invalid("variables_too_large", f"variables is {size} bytes; at most {MAX_VARIABLES_BYTES}.")
    return variables


def _identifier(description: str):
    return Field(None, min_length=1, max_length=MAX_ID_CHARS, description=description)


class ExecuteInput(CodedSchema):
    """The body of POST /agents/{agent_id}/execute and /execute/stream."""

    CODES = {
        "": "invalid_request",
        "message": "invalid_message",
        "attachments": "invalid_attachments",
        ("attachments", "too_long"): "too_many_attachments",
        "variables": "invalid_variables",
        "conversation_scope": "invalid_conversation_scope",
        "external_user_id": "invalid_external_user_id",
        "client_tools": "invalid_client_tools",
        ("client_tools", "too_long"): "too_many_client_tools",
    }

    message: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        validate_default=True,
        description="Required when the agent has requires_user_message",
    )
    attachments: list[ExecuteAttachment] | None = Field(None, max_length=MAX_ATTACHMENTS)
    variables: Annotated[dict[str, Any], AfterValidator(_variables_size)] | None = Field(
        None, json_schema_extra={"x-maxBytes": MAX_VARIABLES_BYTES}, description="At most 16 KiB as compact JSON"
    )
    conversation_scope: str | None = _identifier(
        "A conversation of the caller with this agent (POST /my/conversations)"
    )
    external_user_id: str | None = _identifier(
        "Your user's id: per-user memory. A workspace key names any user; an end-user key only its own "
        "(its customer's external id, else `principal:<uuid>`): another is 403 `forbidden`"
    )
    client_tools: list[ExecuteClientTool] | None = Field(None, max_length=MAX_CLIENT_TOOLS)

    _stored_files: dict = PrivateAttr(default_factory=dict)

    @field_validator("message")
    @classmethod
    def _required_message(cls, message, info: ValidationInfo):
        if message is None and info.context["agent"].requires_user_message:
            raise invalid("message_required", "This agent requires a message.")
        return message

    @field_validator("client_tools")
    @classmethod
    def _client_tool_names(cls, tools, info: ValidationInfo):
        """Unique, and none of the agent's server tools (its live version's workflow)."""
        if not tools:
            return tools
        server_tools, seen = server_tool_names(info.context["agent"].live_version.workflow), set()
        for index, tool in enumerate(tools):
            if tool.name in server_tools:
                raise invalid_at(
                    (index, "name"), "client_tool_name_collision", f"{tool.name!r} is one of the agent's server tools."
                )
            if tool.name in seen:
                raise invalid_at((index, "name"), "duplicate_client_tool", f"{tool.name!r} is defined twice.")
            seen.add(tool.name)
        return tools

    @model_validator(mode="after")
    def _uploaded_attachments(self, info: ValidationInfo):
        """Each attachment an upload the caller may attach (files.selectors.attachable_files; one
        query for them all)."""
        if self.attachments:
            keys = [attachment.storage_key for attachment in self.attachments]
            files = attachable_files(info.context["caller"], keys)
            self._stored_files = {stored.storage_key: stored for stored in files}
            for index, key in enumerate(keys):
                if key not in self._stored_files:
                    raise invalid_at(
                        ("attachments", index, "storage_key"),
                        "attachment_not_found",
                        f"No uploaded file {key!r} in this workspace.",
                    )
        return self

    def inputs(self) -> dict:
        """The execution's `inputs`: only the fields the request set, an attachment as its upload."""
        inputs = {
            "message": self.message,
            "attachments": [
                {
                    "storage_key": stored.storage_key,
                    "filename": stored.filename,
                    "content_type": stored.content_type,
                    "size_bytes": stored.size_bytes,
                }
                for stored in (self._stored_files[attachment.storage_key] for attachment in self.attachments or [])
            ],
            "variables": self.variables,
            "conversation_scope": self.conversation_scope,
            "external_user_id": self.external_user_id,
            "client_tools": [tool.model_dump() for tool in self.client_tools or []],
        }
        return {key: value for key, value in inputs.items() if value not in (None, [])}


class BatchItemKey(Schema):
    """The field a batch item adds to an execute request (a base class so that it is checked first)."""

    key: str = Field(min_length=1, max_length=MAX_BATCH_KEY_CHARS, description="Unique in the batch")


class ExecuteBatchItem(ExecuteInput, BatchItemKey):
    """One item of a batch: an execute request with its `key`."""

    CODES = {**ExecuteInput.CODES, "": "invalid_item", "key": "invalid_item_key"}


def _non_empty_list(items):
    if not isinstance(items, list) or not items:
        raise invalid("items_required", "items must be a non-empty list.")
    return items


class ExecuteBatchInput(Schema):
    """The body of POST /agents/{agent_id}/execute/batch; errors name the item (`items[3].message`)."""

    items: Annotated[
        list[ExecuteBatchItem],
        BeforeValidator(_non_empty_list),
        SettingLimit("BATCH_MAX_ITEMS", "maxItems", "too_many_items", message="A batch has at most {limit} items."),
    ] = Field(json_schema_extra={"minItems": 1})

    @field_validator("items")
    @classmethod
    def _unique_keys(cls, items):
        seen = set()
        for index, item in enumerate(items):
            if item.key in seen:
                raise invalid_at((index, "key"), "duplicate_item_key", f"The key {item.key!r} is used twice.")
            seen.add(item.key)
        return items


class SyncExecuteUsage(Schema):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SyncExecuteResult(Schema):
    text: str
    parsed_output: Any = Field(None, description="The AI node's output_schema, parsed; null without one")
    usage: SyncExecuteUsage
    cost_microdollars: int


class SyncExecuteError(Schema):
    code: str
    message: str


class SyncExecuteOutput(Schema):
    """The answer of POST /agents/{agent_id}/execute: the execution's end (completed with `output`,
    failed or cancelled with `error`) or suspension; only `execution_id` and `status` when it is
    still running after SYNC_EXECUTE_TIMEOUT_SECONDS (202)."""

    execution_id: str
    status: str = Field(
        description="completed, failed, cancelled, awaiting_approval, waiting_for_external_event, "
        "awaiting_client_tool; queued or running (202)"
    )
    output: SyncExecuteResult | None = None
    cost_microdollars: int | None = None
    credits_used: float | None = None
    latency_ms: int | None = None
    error: SyncExecuteError | None = None
