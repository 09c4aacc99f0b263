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
        register(name, _ref_siblings(sub_schema))
    return _ref_siblings(generated)


def _ref_siblings(node):
    """OpenAPI 3.0 ignores the siblings of a `$ref` (a field's description): the reference goes into
    an `allOf`, as drf-spectacular writes it."""
    if isinstance(node, list):
        return [_ref_siblings(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and len(node) > 1:
        node = {"allOf": [{"$ref": node["$ref"]}], **{key: value for key, value in node.items() if key != "$ref"}}
    return {key: _ref_siblings(value) for key, value in node.items()}


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
            return {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ExecutionEvent"}}}
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

EVENT = {
    "type": "object",
    "description": "One SSE frame: `id: <seq>` then `data: <this JSON>`. Types: start, text, reasoning, "
    "tool_call, tool_result, tool_call_awaiting_client, node_start, node_complete, media_gen_submitted, "
    "media_gen_complete, heartbeat (every MEDIA_HEARTBEAT_SECONDS, 15 s, while media generation runs), final, "
    "error (failed or cancelled, with `code`), suspended (with the awaited input), resumed, "
    "sub_execution_started; a batch: batch_started, batch_progress, batch_completed.",
    "properties": {
        "type": {"type": "string"},
        "execution_id": {"type": "string", "example": "execution:0f8c..."},
        "seq": {"type": "integer", "minimum": 1},
        "status": {
            "type": "string",
            "enum": [
                "queued",
                "running",
                "completed",
                "failed",
                "cancelled",
                "awaiting_client_tool",
                "awaiting_approval",
                "waiting_for_external_event",
                "waiting_for_sub_execution",
            ],
        },
        "text": {"type": "string", "description": "`text` events: the next chunk of the answer"},
    },
    "required": ["type", "execution_id", "seq"],
}

EXECUTE_REQUEST = {
    "type": "object",
    "properties": {
        "message": {
            "type": "string",
            "minLength": 1,
            "maxLength": 65536,
            "description": "Required when the agent has requires_user_message.",
        },
        "attachments": {
            "type": "array",
            "maxItems": 10,
            "items": {
                "type": "object",
                "required": ["storage_key"],
                "properties": {
                    "storage_key": {"type": "string", "description": "From POST /attachments/upload"},
                    "filename": {"type": "string"},
                    "content_type": {"type": "string"},
                },
            },
        },
        "variables": {"type": "object", "description": "At most 16 KiB as compact UTF-8 JSON."},
        "conversation_scope": {"type": "string", "maxLength": 255},
        "external_user_id": {"type": "string", "maxLength": 255},
        "client_tools": {
            "type": "array",
            "maxItems": 32,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": "^[a-z][a-z0-9_]{0,63}$",
                        "description": "Must not be one of the agent's server tools.",
                    },
                    "description": {"type": "string"},
                    "parameters": {"type": "object"},
                },
            },
        },
    },
}

USAGE = {
    "type": "object",
    "properties": {k: {"type": "integer"} for k in ("input_tokens", "output_tokens", "total_tokens")},
}

SYNC_RESPONSE = {
    "type": "object",
    "properties": {
        "data": {
            "type": "object",
            "properties": {
                "execution_id": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": [
                        "completed",
                        "awaiting_approval",
                        "waiting_for_external_event",
                        "awaiting_client_tool",
                        "failed",
                        "cancelled",
                    ],
                },
                "output": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "parsed_output": {"nullable": True},
                        "usage": USAGE,
                        "cost_microdollars": {"type": "integer"},
                    },
                },
                "cost_microdollars": {"type": "integer"},
                "latency_ms": {"type": "integer"},
                "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
            },
        }
    },
}

SSE = {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ExecutionEvent"}}}
JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
SECURITY = [{"ApiKeyHeader": []}, {"BearerKey": []}]


def _path_param(name):
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


def _errors(*codes):
    return {str(code): {"description": "error", "content": JSON_ERROR} for code in codes}


def add_async_endpoints(result, generator, request, public):
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.update({"Error": ERROR, "ExecutionEvent": EVENT})
    for operation in ASYNC_OPERATIONS:
        result["paths"].setdefault(operation.path, {})[operation.method] = _render_operation(operation, components)
    agent_params = [_path_param("agent_id"), WORKSPACE_HEADER, IDEMPOTENCY_HEADER]
    result["paths"]["/agents/{agent_id}/execute"] = {
        "post": {
            "operationId": "agents_execute",
            "tags": ["agents"],
            "summary": "Execute an agent and wait",
            "description": "Blocks until the execution completes, fails or suspends. After "
            "SYNC_EXECUTE_TIMEOUT_SECONDS it answers 202 with the current status.",
            "parameters": agent_params,
            "security": SECURITY,
            "requestBody": {"required": True, "content": {"application/json": {"schema": EXECUTE_REQUEST}}},
            "responses": {
                "200": {
                    "description": "ended or suspended",
                    "content": {"application/json": {"schema": SYNC_RESPONSE}},
                },
                "202": {"description": "still running"},
                **_errors(400, 401, 403, 404, 409, 422),
            },
        }
    }
    result["paths"]["/agents/{agent_id}/execute/stream"] = {
        "post": {
            "operationId": "agents_execute_stream",
            "tags": ["agents"],
            "summary": "Execute an agent as an SSE stream",
            "parameters": agent_params,
            "security": SECURITY,
            "requestBody": {"required": True, "content": {"application/json": {"schema": EXECUTE_REQUEST}}},
            "responses": {
                "200": {"description": "the execution's events to `final` or `error`", "content": SSE},
                **_errors(400, 401, 403, 404, 409, 422),
            },
        }
    }
    result["paths"]["/executions/{execution_id}/events"] = {
        "get": {
            "operationId": "executions_events",
            "tags": ["executions"],
            "summary": "Follow an execution's events (SSE)",
            "description": "Starts at the first event, or after `Last-Event-ID` (header, or `last_event_id` / "
            "`lastEventId` in the query for EventSource). Ends after `final` or `error`, or at a suspension.",
            "parameters": [
                _path_param("execution_id"),
                {
                    "in": "header",
                    "name": "Last-Event-ID",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "in": "query",
                    "name": "last_event_id",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "in": "query",
                    "name": "token",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "A stream token from POST /executions/{id}/stream-token, instead of the key header.",
                },
            ],
            "security": SECURITY,
            "responses": {"200": {"description": "the events", "content": SSE}, **_errors(400, 401, 404)},
        }
    }
    result["paths"]["/agents/{agent_id}/execute/batch"] = {
        "post": {
            "operationId": "agents_execute_batch",
            "tags": ["agents"],
            "summary": "Execute an agent on many items",
            "description": "Each item runs as its own child execution, anywhere in the worker fleet, with its credits held "
            "per item (402 for the whole batch if they cannot all be held). The SSE answer is the batch "
            "execution's log: `batch_started` (the items' execution ids), `batch_progress` as each item "
            "ends (key, status, output or error, completed/total), `batch_completed` (succeeded, failed). "
            "At most BATCH_MAX_ITEMS (100) items; item errors name the item (`items[3].message`).",
            "parameters": agent_params,
            "security": SECURITY,
            "requestBody": {"required": True, "content": {"application/json": {"schema": BATCH_REQUEST}}},
            "responses": {
                "200": {"description": "the batch's events", "content": SSE},
                **_errors(400, 401, 402, 403, 404, 409, 422),
            },
        }
    }
    return result


BATCH_REQUEST = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "allOf": [
                    EXECUTE_REQUEST,
                    {
                        "type": "object",
                        "required": ["key"],
                        "properties": {
                            "key": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 128,
                                "description": "Unique in the batch",
                            }
                        },
                    },
                ]
            },
        }
    },
}
