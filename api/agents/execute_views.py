"""The agents API's execute endpoints (spec/agents-execute.txt): sync, streaming and batch.

All are async views: the request is parsed and the execution created in one short sync call,
then the response follows the execution's event log without holding a thread.
"""

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse

from accounts.rate_limits import check_batch_rate_limit
from agents.selectors import get_live_agent
from api.agents.schemas import ExecuteBatchInput, ExecuteInput, SyncExecuteOutput
from api.http.async_views import async_api_view, run_authenticated, sse_response
from api.http.openapi import IDEMPOTENCY_HEADER, WORKSPACE_HEADER, async_operation, path_param
from api.http.request_limits import BodyLimit
from api.http.schemas import data_envelope, json_object, parse, render
from executions.agent_executions import start_agent_batch, start_agent_execution
from executions.idempotency import parse_idempotency_key, request_fingerprint
from executions.models import ExecutionSource
from executions.streaming import follow_events, relay_events

PARAMETERS = [path_param("agent_id"), WORKSPACE_HEADER, IDEMPOTENCY_HEADER]
PREFER_HEADER = {
    "in": "header",
    "name": "Prefer",
    "required": False,
    "schema": {"type": "string", "example": "respond-async"},
    "description": "`respond-async` (RFC 7240): answer 202 as soon as the execution is queued, without waiting.",
}
ASYNC_HEADERS = {
    "Location": {
        "description": "With `Prefer: respond-async`: the execution to poll, `/executions/{execution_id}` (its "
        "events stream at `/executions/{execution_id}/events`)",
        "schema": {"type": "string"},
    },
    "Preference-Applied": {
        "description": "`respond-async` when the preference was honoured",
        "schema": {"type": "string"},
    },
}
# 402: the credits an execution holds (each item's, for a batch) cannot be held
ERRORS = {status: "error" for status in (400, 401, 402, 403, 404, 409, 422)}
SyncExecuteOutputEnvelope = data_envelope(SyncExecuteOutput)


def _parse(caller, agent_id: str, request, route: str, schema):
    """The agent (its rules are the body's), the body validated by `schema`, and the Idempotency-Key
    with the fingerprint of the request it came with."""
    agent = get_live_agent(caller.workspace, agent_id)
    idempotency_key = parse_idempotency_key(request.headers)
    body = json_object(request.body)
    parsed = parse(schema, body, agent=agent, caller=caller)
    fingerprint = request_fingerprint(f"{route} {agent.id}", body) if idempotency_key else None
    return agent, parsed, {"idempotency_key": idempotency_key, "fingerprint": fingerprint}


def _start_execution(caller, agent_id: str, request, source: str, route: str):
    agent, body, idempotency = _parse(caller, agent_id, request, route, ExecuteInput)
    return start_agent_execution(caller=caller, agent=agent, inputs=body.inputs(), source=source, **idempotency)


def _prefers_async(request) -> bool:
    """`Prefer: respond-async` among the request's preferences (RFC 7240: comma-separated, names
    case-insensitive, each maybe with `=value` and `;` parameters; repeated headers are joined)."""
    preferences = request.headers.get("Prefer", "").split(",")
    return any(p.split(";")[0].split("=")[0].strip().lower() == "respond-async" for p in preferences)


def _still_running(execution) -> JsonResponse:
    """202 with the execution's id and current state: not ended (yet) when the answer is sent."""
    data = {"execution_id": execution.public_id, "status": execution.state}
    return JsonResponse({"data": render(SyncExecuteOutput, data)}, status=202)


def _accepted(execution) -> JsonResponse:
    """The 202 of a respond-async start, with where to poll the execution."""
    response = _still_running(execution)
    response["Location"] = f"/executions/{execution.public_id}"
    response["Preference-Applied"] = "respond-async"
    return response


def _start_batch(caller, agent_id: str, request):
    agent, body, idempotency = _parse(caller, agent_id, request, "execute/batch", ExecuteBatchInput)
    check_batch_rate_limit(caller.api_key, len(body.items))  # each item counts as a request
    items = [(item.key, item.inputs()) for item in body.items]
    return start_agent_batch(caller=caller, agent=agent, items=items, **idempotency)


@async_operation(
    path="/agents/{agent_id}/execute/stream",
    method="post",
    operation_id="agents_execute_stream",
    tag="agents",
    summary="Execute an agent as an SSE stream",
    description="The execution's events, `id: <seq>` then `data: <json>`, to `final` or `error`.",
    request=ExecuteInput,
    responses={200: "sse", **ERRORS},
    parameters=PARAMETERS,
)
@async_api_view("POST")
async def execute_stream(request, agent_id):
    """POST /agents/{agent_id}/execute/stream: `id: <seq>` + `data: <json>` frames to final/error."""
    execution = await run_authenticated(
        request, _start_execution, agent_id, request, ExecutionSource.STREAM, "execute/stream"
    )
    return sse_response(relay_events(execution.id))


@async_operation(
    path="/agents/{agent_id}/execute/batch",
    method="post",
    operation_id="agents_execute_batch",
    tag="agents",
    summary="Execute an agent on many items",
    description="Each item runs as its own child execution, anywhere in the worker fleet, with its credits held "
    "per item (402 for the whole batch if they cannot all be held). The SSE answer is the batch "
    "execution's log: `batch_started` (the items' execution ids), `batch_progress` as each item "
    "ends (key, status, output or error, completed/total), `batch_completed` (succeeded, failed). "
    "At most BATCH_MAX_ITEMS items; item errors name the item (`items[3].message`).",
    request=ExecuteBatchInput,
    responses={200: "sse", **ERRORS},
    parameters=PARAMETERS,
)
@async_api_view("POST", body_limit=BodyLimit("BATCH_BODY_MAX_BYTES"))
async def execute_batch(request, agent_id):
    """POST /agents/{agent_id}/execute/batch: the batch's events, batch_started to batch_completed."""
    batch = await run_authenticated(request, _start_batch, agent_id, request)
    return sse_response(relay_events(batch.id))


@async_operation(
    path="/agents/{agent_id}/execute",
    method="post",
    operation_id="agents_execute",
    tag="agents",
    summary="Execute an agent and wait",
    description="Blocks until the execution completes, fails or suspends. After SYNC_EXECUTE_TIMEOUT_SECONDS it "
    'answers 202 with the current status. With `Prefer: respond-async` it answers 202 at once, `{"data": '
    '{"execution_id", "status"}}` with `Location: /executions/{execution_id}` to poll (or follow '
    "`/executions/{execution_id}/events` as SSE) and `Preference-Applied: respond-async`.",
    request=ExecuteInput,
    responses={200: SyncExecuteOutputEnvelope, 202: SyncExecuteOutputEnvelope, **ERRORS},
    parameters=[*PARAMETERS, PREFER_HEADER],
    headers={202: ASYNC_HEADERS},
)
@async_api_view("POST")
async def execute_sync(request, agent_id):
    """POST /agents/{agent_id}/execute: blocks until the execution ends (or the sync timeout)."""
    execution = await run_authenticated(request, _start_execution, agent_id, request, ExecutionSource.API, "execute")
    if _prefers_async(request):
        return _accepted(execution)
    last = None
    try:
        async with asyncio.timeout(settings.SYNC_EXECUTE_TIMEOUT_SECONDS):
            async for item in follow_events(execution.id):
                if item is not None:
                    last = json.loads(item[1])
    except TimeoutError:
        last = None
    if last is None or last["type"] not in ("final", "error", "suspended"):
        await sync_to_async(execution.refresh_from_db)()
        return _still_running(execution)
    data = {"execution_id": execution.public_id, "status": last["status"]}
    if last["type"] == "final":
        # the spec's example has cost_microdollars inside `output`; the top-level copy is kept for clients
        # that read it next to latency_ms
        data.update(
            output={**last["output"], "cost_microdollars": last["cost_microdollars"]},
            cost_microdollars=last["cost_microdollars"],
            credits_used=last["credits_used"],
            latency_ms=last["latency_ms"],
        )
    elif last["type"] == "error":
        data["error"] = {"code": last["code"], "message": last["message"]}
    return JsonResponse({"data": render(SyncExecuteOutput, data)})
