"""Resuming a suspended execution over the API, all in one style:

    POST /executions/{id}/tool-result     {"tool_call_id", "outcome": "success"|"error", "result"}
    POST /executions/{id}/approval        {"decision": "approve"|"reject", "comment"}
    POST /executions/{id}/external-event  {"event", "payload"}

Each answers `{"data": {"execution_id", "status", ...}}`, or, with `Accept: text/event-stream`
once the execution is resumed, streams the resumed run from its `resumed` event to its end or
its next suspension. Wrong state: 409 `execution_not_<state>`.
"""

import json

from django.conf import settings
from django.http import JsonResponse

from config.errors import ApiError
from executions import resumes
from executions.agent_requests import parse_json_object
from executions.selectors import get_readable_execution
from executions.streaming import relay_events
from executions.views import async_api_view, run_authenticated, sse_response

MAX_COMMENT_CHARS = 2000
MAX_EVENT_NAME_CHARS = 128


def _json_size(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _tool_result(caller, execution, body) -> tuple[int, dict]:
    call_id, outcome = body.get("tool_call_id"), body.get("outcome", "success")
    if not isinstance(call_id, str) or not call_id:
        raise ApiError(400, "tool_call_id_required", "tool_call_id must be a non-empty string.", field="tool_call_id")
    if outcome not in ("success", "error"):
        raise ApiError(400, "invalid_outcome", "outcome must be \"success\" or \"error\".", field="outcome")
    if "result" not in body:
        raise ApiError(400, "result_required", "result is required (any JSON value).", field="result")
    if _json_size(body["result"]) > settings.TOOL_RESULT_MAX_BYTES:
        raise ApiError(413, "result_too_large", f"result is limited to {settings.TOOL_RESULT_MAX_BYTES} bytes of JSON.",
                       field="result")
    resumed_seq, pending = resumes.submit_tool_result(execution, call_id, outcome, body["result"])
    return resumed_seq, {"pending_tool_call_ids": pending}


def _approval(caller, execution, body) -> tuple[int, dict]:
    decision, comment = body.get("decision"), body.get("comment", "")
    if decision not in ("approve", "reject"):
        raise ApiError(400, "invalid_decision", "decision must be \"approve\" or \"reject\".", field="decision")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise ApiError(400, "invalid_comment", f"comment must be a string of at most {MAX_COMMENT_CHARS} characters.",
                       field="comment")
    decided = "approved" if decision == "approve" else "rejected"
    return resumes.decide_approval(execution, decided, comment, caller.principal), {"decision": decided}


def _external_event(caller, execution, body) -> tuple[int, dict]:
    event, payload = body.get("event"), body.get("payload")
    if not isinstance(event, str) or not 1 <= len(event) <= MAX_EVENT_NAME_CHARS:
        raise ApiError(400, "invalid_event", f"event must be a name of 1 to {MAX_EVENT_NAME_CHARS} characters.",
                       field="event")
    if _json_size(payload) > settings.TOOL_RESULT_MAX_BYTES:
        raise ApiError(413, "payload_too_large", f"payload is limited to {settings.TOOL_RESULT_MAX_BYTES} bytes of JSON.",
                       field="payload")
    return resumes.post_external_event(execution, event, payload), {"event": event}


def _handle(caller, execution_id: str, raw_body: bytes, action):
    execution = get_readable_execution(caller, execution_id)
    resumed_seq, data = action(caller, execution, parse_json_object(raw_body))
    execution.refresh_from_db(fields=["state"])
    return execution, resumed_seq, {"execution_id": execution.public_id, "status": execution.state, **data}


def _view(action):
    @async_api_view("POST")
    async def view(request, execution_id):
        execution, resumed_seq, data = await run_authenticated(request, _handle, execution_id, request.body, action)
        if resumed_seq and "text/event-stream" in request.headers.get("Accept", ""):
            return sse_response(relay_events(execution.id, after_seq=resumed_seq - 1))
        return JsonResponse({"data": data})

    return view


tool_result = _view(_tool_result)
approval = _view(_approval)
external_event = _view(_external_event)
