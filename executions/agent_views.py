"""The agents API's execute endpoints (spec/agents-execute.txt): sync and streaming.

Both are async views: the request is parsed and the execution created in one short sync call,
then the response follows the execution's event log without holding a thread.
"""

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agents.models import Agent
from config.errors import ApiError, error_json, not_found
from executions import services
from executions.models import ExecutionSource
from executions.selectors import parse_prefixed_id
from executions.streaming import follow_events, relay_events
from executions.views import authenticate_async, sse_response

MAX_MESSAGE_CHARS = 65_536


def parse_execute_body(request, agent: Agent) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    message = body.get("message")
    if message is None:
        if agent.requires_user_message:
            raise ApiError(400, "message_required", "This agent requires a message.", field="message")
    elif not isinstance(message, str) or not 1 <= len(message) <= MAX_MESSAGE_CHARS:
        raise ApiError(400, "invalid_message", f"message must be a string of 1 to {MAX_MESSAGE_CHARS} characters.",
                       field="message")
    return {"message": message} if message is not None else {}


def start_agent_execution(caller, agent_id: str, request, source: str):
    parsed = parse_prefixed_id(agent_id, "agent")
    agent = (
        Agent.objects.select_related("live_version").filter(id=parsed, workspace_id=caller.workspace.id).first()
        if parsed else None
    )
    if agent is None:
        raise not_found("agent")
    if agent.live_version is None:
        raise ApiError(409, "agent_not_published", "The agent has no published version.")
    inputs = parse_execute_body(request, agent)
    return services.create_execution(
        workspace=caller.workspace, principal=caller.principal, source=source, inputs=inputs,
        agent_version=agent.live_version, start_payload={"agent_id": f"agent:{agent.id}"},
    )


async def _start(request, agent_id, source):
    if request.method != "POST":
        raise ApiError(405, "method_not_allowed", "Use POST.")
    caller = await authenticate_async(request)
    return await sync_to_async(start_agent_execution)(caller, agent_id, request, source)


@csrf_exempt
async def execute_stream(request, agent_id):
    """POST /agents/{agent_id}/execute/stream: `id: <seq>` + `data: <json>` frames to final/error."""
    try:
        execution = await _start(request, agent_id, ExecutionSource.STREAM)
    except ApiError as exc:
        return error_json(exc)
    return sse_response(relay_events(execution.id))


@csrf_exempt
async def execute_sync(request, agent_id):
    """POST /agents/{agent_id}/execute: blocks until the execution ends (or the sync timeout)."""
    try:
        execution = await _start(request, agent_id, ExecutionSource.API)
    except ApiError as exc:
        return error_json(exc)
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
        return JsonResponse({"data": {"execution_id": execution.public_id, "status": execution.state}}, status=202)
    data = {"execution_id": execution.public_id, "status": last["status"]}
    if last["type"] == "final":
        data.update(output={**last["output"], "parsed_output": None}, cost_microdollars=last["cost_microdollars"],
                    latency_ms=last["latency_ms"])
    elif last["type"] == "error":
        data["error"] = {"code": last["code"], "message": last["message"]}
    return JsonResponse({"data": data})
