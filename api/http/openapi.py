"""OpenAPI additions: the API-key security schemes, the declared schemas (api/http/schemas.py) as
components, and the async endpoints (execute, SSE, resumes) that drf-spectacular cannot introspect
because they are plain async Django views: they declare themselves with `async_operation`."""

from dataclasses import dataclass, field

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent
from pydantic.json_schema import DefsRef, GenerateJsonSchema

from api.http.schemas import COMPONENT_CLASSES, COMPONENT_NAMES, Schema, component_name


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = ["ApiKeyHeader", "BearerKey"]

    def get_security_definition(self, auto_schema):
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "wak_ (workspace) or eak_ (end-user) key. `Authorization: <key>` also works.",
            },
            {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
        ]


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, with the GET of an APIView that has a `pagination_class` documented as a
    list, as a ListAPIView's: the paginator's parameters, and its page around the declared `Output`."""

    def _is_list_view(self, serializer=None) -> bool:
        if self.method == "GET" and getattr(self.view, "pagination_class", None) is not None:
            return True
        return super()._is_list_view(serializer)


class _ComponentNames(GenerateJsonSchema):
    """Names every declared schema's component by `component_name` (`ExecuteView.Input` ->
    `ExecuteInput`), not by pydantic's short class name, which repeats across views."""

    def get_defs_ref(self, core_mode_ref):
        defs_ref = super().get_defs_ref(core_mode_ref)
        name = COMPONENT_NAMES.get(core_mode_ref[0].split(":")[0])
        if name is not None:  # pydantic takes the first of these choices that is unique
            self._prioritized_defsref_choices[defs_ref].insert(0, DefsRef(name))
        return defs_ref


def json_schema(schema: type[Schema], direction: str, register) -> dict:
    """The JSON schema of a declared schema; its sub-schemas are passed to register(name, schema)."""
    generated = schema.model_json_schema(
        ref_template="#/components/schemas/{model}",
        mode="validation" if direction == "request" else "serialization",
        schema_generator=_ComponentNames,
    )
    defs = generated.pop("$defs", {})
    if set(generated) == {"$ref"}:  # a recursive schema is a reference to its own definition
        generated = defs.pop(generated["$ref"].rsplit("/", 1)[-1])
    for name, sub_schema in defs.items():
        register(name, _as_openapi_30(sub_schema))
    return _as_openapi_30(generated)


def _as_openapi_30(node):
    """pydantic writes JSON Schema 2020-12; the document is OpenAPI 3.0, which differs where pydantic
    writes an optional field (`anyOf: [X, {type: null}]` -> X with `nullable`), a one-value Literal
    (`const` -> a one-value `enum`), `examples` (-> one `example`), and the siblings of a `$ref` (a
    field's description), which 3.0 ignores (the reference goes into an `allOf`, as drf-spectacular
    writes it)."""
    if isinstance(node, list):
        return [_as_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    variants = node.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        others = [variant for variant in variants if variant != {"type": "null"}]
        del node["anyOf"]
        node = {**(others[0] if len(others) == 1 else {"anyOf": others}), **node, "nullable": True}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list) and node["examples"]:
        node["example"] = node.pop("examples")[0]
    if "$ref" in node and len(node) > 1:
        node = {"allOf": [{"$ref": node["$ref"]}], **{key: value for key, value in node.items() if key != "$ref"}}
    return {key: _as_openapi_30(value) for key, value in node.items()}


class DeclaredSchemaExtension(OpenApiSerializerExtension):
    """A declared schema in `extend_schema(request=..., responses=...)` of a DRF view."""

    target_class = Schema
    match_subclasses = True
    priority = 1  # before drf-spectacular's own pydantic extension

    def get_name(self, auto_schema, direction):
        return component_name(self.target)

    def map_serializer(self, auto_schema, direction):
        def register(name, schema):
            # the class as identity, as when the sub-schema is itself a response (no collision warning)
            identity = COMPONENT_CLASSES.get(name, name)
            component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=identity, schema=schema)
            auto_schema.registry.register_on_missing(component)

        return json_schema(self.target, direction, register)


@dataclass
class AsyncOperation:
    """One operation of a plain async view, for the OpenAPI document. `request` and the values of
    `responses` are declared schemas (classes, or functions returning one, read at generation
    time), "sse" for a text/event-stream of events, or a description string."""

    path: str
    method: str
    operation_id: str
    tag: str
    summary: str
    description: str = ""
    request: object = None
    responses: dict = field(default_factory=dict)
    parameters: list = field(default_factory=list)
    headers: dict = field(default_factory=dict)  # status -> {header name: OpenAPI header object}


ASYNC_OPERATIONS: list[AsyncOperation] = []


def async_operation(**kwargs):
    """Declares the decorated async view's operation (see AsyncOperation)."""

    def register(view):
        ASYNC_OPERATIONS.append(AsyncOperation(**kwargs))
        return view

    return register


def _render_operation(operation: AsyncOperation, components: dict) -> dict:
    def register(name, schema):
        components.setdefault(name, schema)

    def content(declared, direction):
        if isinstance(declared, list):  # one answer in several media types
            return {key: value for each in declared for key, value in content(each, direction).items()}
        if declared == "sse":
            return {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ExecutionEventFrame"}}}
        schema = declared() if not isinstance(declared, type) else declared
        name = component_name(schema)
        components[name] = json_schema(schema, direction, register)
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    responses = {}
    for status, declared in operation.responses.items():
        if status >= 400:
            responses[str(status)] = {"description": declared or "error", "content": JSON_ERROR}
        elif isinstance(declared, str) and declared != "sse":
            responses[str(status)] = {"description": declared}
        else:
            responses[str(status)] = {"description": operation.summary, "content": content(declared, "response")}
        if status in operation.headers:
            responses[str(status)]["headers"] = operation.headers[status]
    rendered = {
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "summary": operation.summary,
        "description": operation.description,
        "parameters": operation.parameters,
        "security": SECURITY,
        "responses": responses,
    }
    if operation.request is not None:
        rendered["requestBody"] = {"required": True, "content": content(operation.request, "request")}
    return rendered


ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable error code, e.g. `message_required`"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The request field at fault, when there is one"},
            },
            "required": ["code", "message"],
        }
    },
}

STATES = [
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
    "awaiting_client_tool",
    "awaiting_approval",
    "waiting_for_external_event",
    "waiting_for_sub_execution",
]
STATUS = {"type": "string", "enum": STATES, "description": "The execution's state after this event"}
STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
ANY = {"description": "Any JSON value"}
NODE = {"node_id": {"type": "string", "description": "The workflow node that emitted it"}}
TOOL_CALL = {
    **NODE,
    "tool_call_id": STRING,
    "name": {"type": "string", "description": "The tool's name"},
    "arguments": {"type": "object", "additionalProperties": True, "description": "The model's arguments"},
}
MODEL_OUTPUT = {
    "type": "object",
    "properties": {
        "text": STRING,
        "parsed_output": {**ANY, "nullable": True, "description": "The text parsed by the node's output_schema"},
        "usage": {
            "type": "object",
            "properties": {"input_tokens": INTEGER, "output_tokens": INTEGER, "total_tokens": INTEGER},
        },
    },
}
ERROR_DETAIL = {
    "type": "object",
    "properties": {"code": STRING, "message": STRING},
    "nullable": True,
    "additionalProperties": True,
}
SUB_EXECUTION = {**NODE, "sub_execution_id": {"type": "string", "example": "execution:0f8c..."}}
MEDIA_JOB = {**NODE, "job_id": STRING}

# The data of each event type the runtime writes to an execution's log (executions/services.py for the
# state transitions, workers/ for the steps), with the fields each carries: (type, what it says, fields,
# required fields besides type, execution_id and seq). Events may gain fields; a client ignores those it
# does not know.
EVENT_TYPES = [
    (
        "start",
        "The execution was created (queued).",
        {
            "status": STATUS,
            "agent_id": {"type": "string", "description": "An agent's execution"},
            "skill_slug": {"type": "string", "description": "A skill's execution"},
            "parent_execution_id": {"type": "string", "description": "A sub-execution: its parent"},
            "retry_of": {"type": "string", "description": "An operator's retry: the execution it retries"},
        },
        ["status"],
    ),
    (
        "forked_from",
        "A fork was created (queued) from a checkpoint of another execution (POST /executions/{id}/fork): "
        "its first event, instead of `start`; nothing before that checkpoint is run or sent again.",
        {
            "status": STATUS,
            "agent_id": STRING,
            "source_execution_id": {"type": "string", "description": "The execution forked"},
            "from_seq": {**INTEGER, "description": "The seq asked for"},
            "checkpoint_seq": {**INTEGER, "description": "The seq of the source's checkpoint it starts from"},
            "model": {**STRING, "nullable": True, "description": "The model alias it runs on, when another"},
        },
        ["status", "source_execution_id", "from_seq", "checkpoint_seq"],
    ),
    (
        "state_changed",
        "A worker took the execution (a skill's), on this attempt.",
        {"state": STATUS, "attempt": INTEGER},
        ["state"],
    ),
    (
        "materials_staged",
        "A skill's file_source_ids were copied into inputs/materials/; missing ones are listed.",
        {"staged": {"type": "array", "items": ANY}, "missing": {"type": "array", "items": ANY}},
        ["staged", "missing"],
    ),
    ("node_start", "A workflow node starts.", {**NODE, "node_type": STRING}, ["node_id"]),
    ("node_complete", "A workflow node is done.", {**NODE, "node_type": STRING}, ["node_id"]),
    ("iteration", "A skill's next model turn.", {**NODE, "iteration": INTEGER}, ["iteration"]),
    (
        "text",
        "The next chunk of the answer (coalesced every TEXT_FLUSH_INTERVAL_MS).",
        {**NODE, "text": STRING, "reset": {**BOOLEAN, "description": "`text` replaces what was streamed so far"}},
        ["text"],
    ),
    (
        "reasoning",
        "The next chunk of the model's reasoning, as `text`.",
        {**NODE, "text": STRING, "reset": BOOLEAN},
        ["text"],
    ),
    ("tool_call", "The model calls a server tool.", TOOL_CALL, ["tool_call_id", "name"]),
    (
        "tool_result",
        "A tool's result (a server tool's, a client tool's posted result, a sub-execution's).",
        {**TOOL_CALL, "outcome": {"type": "string", "enum": ["success", "error"]}, "result": ANY},
        ["tool_call_id", "outcome"],
    ),
    (
        "tool_call_awaiting_client",
        "The model calls a client tool: answer with POST /executions/{id}/tool-result.",
        TOOL_CALL,
        ["tool_call_id", "name", "arguments"],
    ),
    (
        "suspended",
        "The execution waits (the stream ends here): for the client tools' results (`pending_tool_call_ids`), "
        "an approval (`prompt`, `default_decision` at `expires_at`: POST /executions/{id}/approval), or an "
        "external event (`event` by `expires_at`: POST /executions/{id}/external-event).",
        {
            "status": STATUS,
            **NODE,
            "pending_tool_call_ids": {"type": "array", "items": STRING},
            "prompt": STRING,
            "event": {**STRING, "nullable": True},
            "expires_at": {"type": "string", "format": "date-time", "nullable": True},
            "default_decision": {"type": "string", "enum": ["approved", "rejected"], "nullable": True},
        },
        ["status"],
    ),
    (
        "resumed",
        "Queued again: the awaited input arrived (`from_state`: the waiting state), or its worker shut down "
        "mid-run and handed it back (`from_state: running`; another worker goes on from its last checkpoint, "
        "without sending again what was sent).",
        {"status": STATUS, "from_state": STATUS, "by": {**STRING, "description": "An operator: admin:<username>"}},
        ["status"],
    ),
    (
        "sub_execution_started",
        "A child execution (an agent or a skill) runs for this node.",
        {**SUB_EXECUTION, "responder": {"type": "string", "example": "agent:0f8c... or skill:report"}},
        ["sub_execution_id"],
    ),
    (
        "sub_execution_finished",
        "The child execution ended.",
        {**SUB_EXECUTION, "status": STATUS},
        ["sub_execution_id", "status"],
    ),
    (
        "media_gen_submitted",
        "A media job was submitted.",
        {**MEDIA_JOB, "provider": STRING, "media_type": STRING},
        ["job_id"],
    ),
    ("heartbeat", "A media job is still running (every MEDIA_HEARTBEAT_SECONDS).", MEDIA_JOB, ["job_id"]),
    (
        "media_gen_complete",
        "The generated file, with a download `url`.",
        {
            **MEDIA_JOB,
            "url": STRING,
            "storage_key": STRING,
            "content_type": STRING,
            "size_bytes": INTEGER,
            "media_type": STRING,
        },
        ["job_id", "url"],
    ),
    (
        "artifact",
        "A file a skill wrote under outputs/.",
        {"artifact_id": STRING, "relpath_in_workspace": STRING, "document_type": STRING, "size_bytes": INTEGER},
        ["artifact_id"],
    ),
    (
        "final",
        "Completed (the stream ends here).",
        {
            "status": STATUS,
            "output": MODEL_OUTPUT,
            "cost_microdollars": INTEGER,
            "credits_used": {"type": "number"},
            "latency_ms": INTEGER,
        },
        ["status", "output"],
    ),
    (
        "error",
        "Failed or cancelled (`code` `cancelled`); the stream ends here.",
        {
            "status": STATUS,
            "code": STRING,
            "message": STRING,
            "by": {**STRING, "description": "A cancel by an operator: admin:<username>"},
        },
        ["status", "code", "message"],
    ),
    (
        "batch_started",
        "A batch's items were created.",
        {
            "status": STATUS,
            "agent_id": STRING,
            "total": INTEGER,
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"key": STRING, "item_execution_id": STRING}},
            },
        },
        ["total", "items"],
    ),
    (
        "batch_progress",
        "One item of the batch ended: its output or error.",
        {
            "key": STRING,
            "item_execution_id": STRING,
            "status": STATUS,
            "completed": INTEGER,
            "total": INTEGER,
            "output": {"type": "object", "properties": {"text": STRING, "parsed_output": {**ANY, "nullable": True}}},
            "error": ERROR_DETAIL,
        },
        ["key", "item_execution_id", "status", "completed", "total"],
    ),
    (
        "batch_completed",
        "Every item ended (the stream ends here).",
        {"status": STATUS, "total": INTEGER, "succeeded": INTEGER, "failed": INTEGER},
        ["total", "succeeded", "failed"],
    ),
]


def _event_component(type_: str) -> str:
    return "".join(part.capitalize() for part in type_.split("_")) + "Event"


def _event_schema(type_: str, description: str, properties: dict, required: list) -> dict:
    return {
        "type": "object",
        "description": f"`{type_}`: {description}",
        "properties": {
            "type": {"type": "string", "enum": [type_]},
            "execution_id": {"type": "string", "example": "execution:0f8c..."},
            "seq": {
                "type": "integer",
                "minimum": 1,
                "description": "Its place in the log, 1, 2, 3, ...; the frame's id",
            },
            **properties,
        },
        "required": ["type", "execution_id", "seq", *required],
    }


EVENT_COMPONENTS = {_event_component(event[0]): _event_schema(*event) for event in EVENT_TYPES}
EVENT = {
    "description": "The data of one SSE frame (`id: <seq>` then `data: <this JSON>`): one of the event types, "
    "told apart by `type`.",
    "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in EVENT_COMPONENTS],
    "discriminator": {
        "propertyName": "type",
        "mapping": {type_: f"#/components/schemas/{_event_component(type_)}" for type_, *_ in EVENT_TYPES},
    },
}

# OpenAPI 3.0 has no schema for a stream's items: a text/event-stream `schema` describes each frame
# as an SSE parser reads it (as schemathesis validates it), its `data` the JSON of an ExecutionEvent.
EVENT_FRAME = {
    "type": "object",
    "description": "One SSE frame of an execution's stream: an `id: <seq>` line, a `data: <json>` line (an "
    "ExecutionEvent, one of the *Event schemas by its `type`), a blank line; no `event:` line. Between frames, "
    "a `: heartbeat` comment every SSE_HEARTBEAT_SECONDS. Reconnect with `Last-Event-ID: <the last id>` for "
    "exactly the events after it; once the execution has ended (`final`, `error`, `batch_completed`), a "
    "reconnection at or past its last event gets 204, so an EventSource stops.",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's seq, for Last-Event-ID"},
        "data": {"type": "string", "description": "An ExecutionEvent, as JSON"},
    },
    "required": ["id", "data"],
}

JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
SECURITY = [{"ApiKeyHeader": []}, {"BearerKey": []}]


def path_param(name):
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}


WORKSPACE_HEADER = {
    "in": "header",
    "name": "X-Workspace-Id",
    "required": False,
    "schema": {"type": "string"},
    "description": "`workspace:<id>`; must be the key's workspace (403 `workspace_mismatch`).",
}


IDEMPOTENCY_HEADER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "The same key in this workspace within 24 h: 409 `idempotency_key_reused` naming the original "
    "execution (`error.execution_id`), no new execution; with a different request: 422 "
    "`idempotency_key_mismatch`; after 24 h it is processed normally.",
}


LAST_EVENT_ID_HEADER = {
    "in": "header",
    "name": "Last-Event-ID",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Resume after this event's seq (an EventSource sends it when it reconnects).",
}

# The answer of an events route asked for what comes after the end of a finished execution.
STREAM_OVER = (
    "The execution has ended and Last-Event-ID is at or past its last event: nothing more will come (a browser's "
    "EventSource stops reconnecting on a 204). Without Last-Event-ID the stream replays from the first event."
)


# The errors any API operation can answer, whatever its view: raised before the view runs (the body and
# request limits, authentication, the workspace check, a route or id that matches nothing) or by a
# dependency that is down. Per-operation codes (409, 422, ...) stay in the views' declarations.
COMMON_ERRORS = {
    400: "Invalid input: a parameter or body field that fails validation (`error.field` names it), a body "
    "that is not valid JSON or not a JSON object, a NUL character, JSON nested too deep, a number too long",
    401: "No API key, or an invalid or revoked one (`authentication_required`, `invalid_api_key`); with "
    "`WWW-Authenticate`",
    403: "X-Workspace-Id is not the key's workspace (`workspace_mismatch`), or the key may not do this",
    404: "Nothing this key may read at this path (`not_found`): unknown ids and other tenants' alike",
    413: "The body is over the endpoint's limit; refused before it is read",
    415: "The body's Content-Type is not the endpoint's (`unsupported_media_type`)",
    429: "The API key made more requests than its rate limit allows in its window (`rate_limited`); retry after "
    "`Retry-After` seconds",
    503: "A dependency (PostgreSQL, Redis) is unavailable; retry after `Retry-After` seconds",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
OPERATION_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _common_errors(operation: dict) -> list[int]:
    statuses = [401, 403, 404, 429, 503]
    if operation.get("parameters") or "requestBody" in operation:
        statuses.append(400)
    if "requestBody" in operation:
        statuses += [413, 415]
    return statuses


def document_common_errors(result, generator, request, public):
    """drf-spectacular's postprocessing hook, after add_async_endpoints: every operation documents
    the errors any API route can answer (COMMON_ERRORS), and every error response of the document
    is the Error envelope, so that a client (and schemathesis) sees each status code it can get."""
    for path_item in result["paths"].values():
        for method, operation in path_item.items():
            if method not in OPERATION_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in _common_errors(operation):
                responses.setdefault(str(status), {"description": COMMON_ERRORS[status]})
            for status, response in responses.items():
                if status[0] in "45" and "content" not in response:
                    response["content"] = JSON_ERROR
            for status in ("429", "503"):
                if status in responses:
                    responses[status].setdefault("headers", RETRY_AFTER)
    return result


def add_async_endpoints(result, generator, request, public):
    """drf-spectacular's postprocessing hook: the declared async operations, and the components
    they share (Error, ExecutionEvent and its SSE frame)."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.update({"Error": ERROR, "ExecutionEvent": EVENT, "ExecutionEventFrame": EVENT_FRAME, **EVENT_COMPONENTS})
    for operation in ASYNC_OPERATIONS:
        result["paths"].setdefault(operation.path, {})[operation.method] = _render_operation(operation, components)
    return result
