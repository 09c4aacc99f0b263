"""Resuming a suspended execution over the API, all in one style:

    POST /executions/{id}/tool-result     {"tool_call_id", "outcome": "success"|"error", "result"}
    POST /executions/{id}/approval        {"decision": "approve"|"reject", "comment"}
    POST /executions/{id}/external-event  {"event", "payload"}

Each answers `{"data": {"execution_id", "status", ...}}`, or, with `Accept: text/event-stream`
once the execution is resumed, streams the resumed run from its `resumed` event to its end or
its next suspension. Wrong state: 409 `execution_not_<state>`.
"""

from typing import Annotated, Any, Literal

from django.http import JsonResponse
from pydantic import BeforeValidator, Field

from api.http.async_views import async_api_view, run_authenticated, sse_response
from api.http.openapi import async_operation
from api.http.request_limits import BodyLimit
from api.http.schemas import Schema, SettingLimit, data_envelope, invalid, json_object, json_size, parse, render
from executions import resumes
from executions.selectors import get_readable_execution
from executions.streaming import relay_events

MAX_COMMENT_CHARS = 2000
MAX_EVENT_NAME_CHARS = 128


def _tool_call_id(value):
    if not isinstance(value, str) or not value:
        raise invalid("tool_call_id_required", "tool_call_id must be a non-empty string.")
    return value


class ToolResultInput(Schema):
    tool_call_id: Annotated[str, BeforeValidator(_tool_call_id)] = Field(
        json_schema_extra={"minLength": 1}, description="The `id` of the pending tool call"
    )
    outcome: Literal["success", "error"] = "success"
    result: Annotated[
        Any,
        SettingLimit(
            "TOOL_RESULT_MAX_BYTES",
            "x-maxBytes",
            "result_too_large",
            measure=json_size,
            status=413,
            message="result is limited to {limit} bytes of JSON.",
        ),
    ] = Field(description="Any JSON value, at most TOOL_RESULT_MAX_BYTES as compact UTF-8 JSON")


class ApprovalInput(Schema):
    decision: Literal["approve", "reject"]
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


class ExternalEventInput(Schema):
    event: str = Field(min_length=1, max_length=MAX_EVENT_NAME_CHARS)
    payload: Annotated[
        Any,
        SettingLimit(
            "TOOL_RESULT_MAX_BYTES",
            "x-maxBytes",
            "payload_too_large",
            measure=json_size,
            status=413,
            message="payload is limited to {limit} bytes of JSON.",
        ),
    ] = None


class ResumeOutput(Schema):
    """What every resume answers (without `Accept: text/event-stream`)."""

    execution_id: str
    status: str
    pending_tool_call_ids: list[str] | None = Field(None, description="tool-result: the calls still pending")
    decision: Literal["approved", "rejected"] | None = Field(None, description="approval")
    event: str | None = Field(None, description="external-event: the event's name")


def _tool_result(caller, execution, body: ToolResultInput) -> tuple[int, dict]:
    resumed_seq, pending = resumes.check_submit_tool_result(execution, body.tool_call_id, body.outcome, body.result)
    return resumed_seq, {"pending_tool_call_ids": pending}


def _approval(caller, execution, body: ApprovalInput) -> tuple[int, dict]:
    decided = "approved" if body.decision == "approve" else "rejected"
    return resumes.check_decide_approval(execution, decided, body.comment, caller.principal), {"decision": decided}


def _external_event(caller, execution, body: ExternalEventInput) -> tuple[int, dict]:
    return resumes.check_post_external_event(execution, body.event, body.payload), {"event": body.event}


def _handle(caller, execution_id: str, raw_body: bytes, action, schema):
    execution = get_readable_execution(caller, execution_id)
    resumed_seq, data = action(caller, execution, parse(schema, json_object(raw_body)))
    execution.refresh_from_db(fields=["state"])
    return execution, resumed_seq, {"execution_id": execution.public_id, "status": execution.state, **data}


def _view(action, schema, route: str, summary: str, description: str):
    @async_operation(
        path=f"/executions/{{execution_id}}/{route}",
        method="post",
        operation_id=f"executions_{route.replace('-', '_')}",
        tag="executions",
        summary=summary,
        description=description + " With `Accept: text/event-stream`, once the execution is resumed, the answer "
        "streams the resumed run from its `resumed` event to its end or next suspension.",
        request=schema,
        responses={
            200: [ResumeOutputEnvelope, "sse"],
            **{status: "error" for status in (400, 401, 404, 409, 413, 422)},
        },
        parameters=[{"in": "path", "name": "execution_id", "required": True, "schema": {"type": "string"}}],
    )
    @async_api_view("POST", body_limit=BodyLimit("RESUME_BODY_MAX_BYTES"))
    async def view(request, execution_id):
        execution, resumed_seq, data = await run_authenticated(
            request, _handle, execution_id, request.body, action, schema
        )
        if resumed_seq and "text/event-stream" in request.headers.get("Accept", ""):
            return sse_response(relay_events(execution.id, after_seq=resumed_seq - 1))
        return JsonResponse({"data": render(ResumeOutput, data)})

    return view


ResumeOutputEnvelope = data_envelope(ResumeOutput)
tool_result = _view(
    _tool_result,
    ToolResultInput,
    "tool-result",
    "Post a client tool's result",
    "For an execution in `awaiting_client_tool`: the result of one pending call (see its `tool_call_awaiting_client` events). The last pending result resumes the execution; before that the answer lists `pending_tool_call_ids`. Unknown call: 404 `tool_call_not_found`; a second result for a call: 409 "
    "`tool_result_already_submitted`; another state: 409 `execution_not_awaiting_client_tool`.",
)
approval = _view(
    _approval,
    ApprovalInput,
    "approval",
    "Approve or reject a human gate",
    "For an execution in `awaiting_approval` (a `human_gate` node). `approve` continues the workflow; `reject` fails it with `approval_rejected` unless the node says `on_reject: continue`. A gate with `timeout_seconds` takes its `default_decision` when nobody decides in time. Another state: 409 `execution_not_awaiting_approval`.",
)
external_event = _view(
    _external_event,
    ExternalEventInput,
    "external-event",
    "Deliver an external event",
    "For an execution in `waiting_for_external_event` (a `wait_event` node): the event and its payload become the node's output. A node that names its event refuses another with 422 `unexpected_event`; a `media_generation` node "
    "waiting for its provider's webhook (Fal.ai) is resumed by that webhook only: 409 `execution_waits_for_media`. "
    "Another state: 409 `execution_not_waiting_for_external_event`.",
)
