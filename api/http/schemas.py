"""Declared request and response schemas: one pydantic class validates a body (or renders a
response) and documents it in the OpenAPI schema (api/http/openapi.py), so a limit is written
once. pydantic rather than DRF serializers because the async views (streams, sync execute,
resumes) are not DRF views, and one mechanism should serve every surface.

A view declares `Input` / `Output` classes; validation errors become the error envelope through
one map (`api_error`): a custom error keeps its own code (`invalid("too_many_attachments", ...)`),
a missing field is `<field>_required`, any other failure `invalid_<field>`; the field is the path
to it (`attachments[0].storage_key`). A limit that comes from the environment is a
`SettingLimit` on the field: read when a request is validated and when the OpenAPI document is
generated, so a changed setting changes both.
"""

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_origin

from django.conf import settings
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import PydanticCustomError, core_schema
from rest_framework.parsers import JSONParser

from core.errors import ApiError

S = TypeVar("S", bound="Schema")


class Schema(BaseModel):
    """Base of every request and response schema. Unknown request fields are ignored (the specs
    let clients send more than a route reads)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        COMPONENT_NAMES[f"{cls.__module__}.{cls.__qualname__}"] = component_name(cls)
        COMPONENT_CLASSES[component_name(cls)] = cls


COMPONENT_NAMES: dict[str, str] = {}  # "module.Qualname" -> OpenAPI component name (api/http/openapi.py)
COMPONENT_CLASSES: dict[str, type] = {}  # and back, for the component's identity


def invalid(code: str, message: str, status: int = 400, field: str | None = None, **extra) -> PydanticCustomError:
    """A validation error with the API's own code, raised from a validator; `field` names the field
    at fault when the validator is the model's (whose errors have no path), `extra` members are
    added to the error envelope (`errors=[...]`)."""
    # the message as the last context value: pydantic fills `{name}`s of the context into it in order,
    # so braces of a value quoted in the message stay as they are
    return PydanticCustomError(
        code, "{message}", {"status": status, "field": field, "extra": extra, "message": message}
    )


def json_size(value) -> int:
    """Bytes of a value as compact UTF-8 JSON (how payload limits are measured)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True)
class SettingLimit:
    """Field metadata: at most `settings.<setting>` (items, characters or JSON bytes, by `measure`),
    checked on every validation and written into the JSON schema as `keyword`.

        items: Annotated[list[BatchItem], SettingLimit("BATCH_MAX_ITEMS", "maxItems", "too_many_items")]
    """

    setting: str
    keyword: str  # maxItems, maxLength, or x-maxBytes (JSON Schema has no keyword for a JSON size)
    code: str
    measure: Callable[[Any], int] = len
    status: int = 400
    message: str = "At most {limit} items."

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema, handler):
        json_schema = handler(schema)
        json_schema[self.keyword] = getattr(settings, self.setting)
        return json_schema

    def _check(self, value):
        limit = getattr(settings, self.setting)
        if self.measure(value) > limit:
            raise invalid(self.code, self.message.format(limit=limit), self.status)
        return value


def _field_path(loc) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def api_error(exc: ValidationError) -> ApiError:
    """The first error of a validation, as the error envelope (400 unless the error says 413)."""
    error = exc.errors(include_url=False)[0]
    field = _field_path(error["loc"])
    top = str(error["loc"][0]) if error["loc"] else "body"
    context = error.get("ctx") or {}
    if isinstance(context.get("status"), int):  # one of ours: `invalid(code, message)`
        field = context.get("field") or field
        return ApiError(context["status"], error["type"], error["msg"], field=field, **context.get("extra", {}))
    code = f"{top}_required" if error["type"] == "missing" else f"invalid_{top}"
    message = f"{field}: {error['msg']}." if field else f"{error['msg']}."
    return ApiError(400, code, message, field=field)


def parse(schema: type[S], data: Any, **context) -> S:
    """`data` (a parsed JSON body, a dict of query parameters) validated by `schema`; context
    (the agent, the workspace...) reaches the validators as `info.context`."""
    try:
        return schema.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise api_error(exc)


def parse_query(schema: type[S], params, **context) -> S:
    """Query parameters (a QueryDict) validated by `schema`: a list field takes every value of its
    name and of `<name>[]`, any other field the last value given (as `QueryDict.get`)."""
    data = {}
    for name, field in schema.model_fields.items():
        key = field.alias or name
        if get_origin(field.annotation) is list or field.annotation is list:
            values = params.getlist(key) + params.getlist(f"{key}[]")
            if values:
                data[key] = values
        elif key in params:
            data[key] = params.get(key)
    return parse(schema, data, **context)


# How deep a request body's arrays and objects may nest: far more than any body of the specs needs
# (JSON Schemas of client tools, tool results), far less than the recursion limit the parser and
# every later walk of the value (pydantic, json.dumps, psycopg) would hit at about 1,000 levels.
MAX_JSON_DEPTH = 64


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python writes them, jsonb refuses them


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: a float that jsonb cannot store
        raise ValueError("number out of range")
    return value


def _storable(text: str) -> bool:
    """PostgreSQL text and jsonb hold no NUL and no lone surrogate (JSON can write both as \\u escapes)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json_value(value) -> None:
    """A parsed body nested at most MAX_JSON_DEPTH deep, every string (key or value) storable; the
    error names the path (`items[3].variables.x`). Iterative: no depth reaches the Python stack."""
    stack = [(value, (), 0)]
    while stack:
        node, loc, depth = stack.pop()
        if isinstance(node, str):
            if not _storable(node):
                raise ApiError(400, "invalid_string", _UNSTORABLE, field=_field_path(loc))
            continue
        if isinstance(node, dict):
            for key in node:
                if not _storable(key):
                    raise ApiError(400, "invalid_string", f"A key: {_UNSTORABLE}", field=_field_path(loc))
            children = [(item, (*loc, key), depth + 1) for key, item in node.items()]
        elif isinstance(node, list):
            children = [(item, (*loc, index), depth + 1) for index, item in enumerate(node)]
        else:
            continue
        if depth + 1 > MAX_JSON_DEPTH:
            raise ApiError(
                400, "json_too_deep", f"JSON may nest at most {MAX_JSON_DEPTH} levels.", field=_field_path(loc)
            )
        stack.extend(reversed(children))  # depth first, in the document's order


_UNSTORABLE = "strings may not contain NUL (\\u0000) or unpaired surrogates (\\ud800-\\udfff)."


def json_object(raw: bytes) -> dict:
    """A request body that must be a JSON object (an empty body is `{}`), checked by
    check_json_value: the one parser of every JSON body, DRF's included (JsonObjectParser)."""
    try:
        body = json.loads(raw or b"{}", parse_constant=_reject_constant, parse_float=_finite)
    except RecursionError:
        raise ApiError(400, "json_too_deep", f"JSON may nest at most {MAX_JSON_DEPTH} levels.")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    check_json_value(body)
    return body


class JsonObjectParser(JSONParser):
    """DRF's JSON parser for every DRF view (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES): the same
    checks as the async views' bodies."""

    def parse(self, stream, media_type=None, parser_context=None):
        return json_object(stream.read())


def render(schema: type[Schema], data: Any) -> dict:
    """A response body through its declared schema: what is not declared, or not given, is not sent."""
    return schema.model_validate(data).model_dump(mode="json", exclude_unset=True)


@functools.cache
def data_envelope(schema: type[Schema]) -> type[Schema]:
    """`{"data": <schema>}`, the envelope of the agents and skills APIs, for the OpenAPI document."""
    return create_model(f"{component_name(schema)}Envelope", __base__=Schema, data=(schema, ...))


def component_name(schema: type[BaseModel]) -> str:
    """`ExecuteView.Input` -> `ExecuteInput`: unique component names for nested Input/Output."""
    return "".join(part.removesuffix("View") for part in schema.__qualname__.split(".") if part != "<locals>")
