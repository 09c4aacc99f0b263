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

# OpenAPI 3.0 has no schema for a stream's items: a text/event-stream `schema` describes each frame
# as an SSE parser reads it (as schemathesis validates it), its `data` the JSON of an ExecutionEvent.
EVENT_FRAME = {
    "type": "object",
    "description": "One SSE frame of an execution's stream; `data` is an ExecutionEvent as JSON. Between "
    "frames, a `: heartbeat` comment every SSE_HEARTBEAT_SECONDS.",
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
    "description": "Resume after this event's seq.",
}


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
    503: "A dependency (PostgreSQL, Redis) is unavailable; retry after `Retry-After` seconds",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
OPERATION_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _common_errors(operation: dict) -> list[int]:
    statuses = [401, 403, 404, 503]
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
            if "503" in responses:
                responses["503"].setdefault("headers", RETRY_AFTER)
    return result


def add_async_endpoints(result, generator, request, public):
    """drf-spectacular's postprocessing hook: the declared async operations, and the components
    they share (Error, ExecutionEvent and its SSE frame)."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.update({"Error": ERROR, "ExecutionEvent": EVENT, "ExecutionEventFrame": EVENT_FRAME})
    for operation in ASYNC_OPERATIONS:
        result["paths"].setdefault(operation.path, {})[operation.method] = _render_operation(operation, components)
    return result
