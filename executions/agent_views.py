"""The agents API's execute endpoints (spec/agents-execute.txt): sync and streaming.

Both are async views: the request is parsed and the execution created in one short sync call,
then the response follows the execution's event log without holding a thread.
"""

import asyncio
import json
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.credits import account_for, hold_credits
from agents.credit_rules import quote
from agents.selectors import get_live_agent
from config.errors import ApiError, error_json
from executions import services
from executions.agent_requests import parse_execute_inputs, parse_json_object
from executions.idempotency import claim_idempotency_key, parse_idempotency_key, request_fingerprint
from executions.models import ExecutionSource, IdempotencyKey
from executions.streaming import follow_events, relay_events
from executions.views import authenticate_async, sse_response

def start_agent_execution(caller, agent_id: str, request, source: str, route: str):
    agent = get_live_agent(caller.workspace, agent_id)
    idempotency_key = parse_idempotency_key(request.headers)
    body = parse_json_object(request.body)
    inputs = parse_execute_inputs(body, agent, caller.workspace)
    execution_id = uuid.uuid4()
    with transaction.atomic():
        claimed = None
        if idempotency_key:
            claimed = claim_idempotency_key(caller.workspace, idempotency_key,
                                            request_fingerprint(f"{route} {agent.id}", body))
        estimate = quote(agent.credit_rules, inputs)["total"]
        account = None
        if estimate > 0:  # 402 here rolls everything back: no execution, no key used
            account = account_for(caller.workspace, caller.principal)
            hold_credits(account, execution_id, estimate)
        execution = services.create_execution(
            id=execution_id, workspace=caller.workspace, principal=caller.principal, source=source, inputs=inputs,
            agent_version=agent.live_version, start_payload={"agent_id": f"agent:{agent.id}"},
            idempotency_key=idempotency_key or "", credit_account=account, credits_held=estimate,
        )
        if claimed:
            IdempotencyKey.objects.filter(id=claimed.id).update(execution=execution)
    return execution


async def _start(request, agent_id, source, route):
    if request.method != "POST":
        raise ApiError(405, "method_not_allowed", "Use POST.")
    caller = await authenticate_async(request)
    return await sync_to_async(start_agent_execution)(caller, agent_id, request, source, route)


@csrf_exempt
async def execute_stream(request, agent_id):
    """POST /agents/{agent_id}/execute/stream: `id: <seq>` + `data: <json>` frames to final/error."""
    try:
        execution = await _start(request, agent_id, ExecutionSource.STREAM, "execute/stream")
    except ApiError as exc:
        return error_json(exc)
    return sse_response(relay_events(execution.id))


@csrf_exempt
async def execute_sync(request, agent_id):
    """POST /agents/{agent_id}/execute: blocks until the execution ends (or the sync timeout)."""
    try:
        execution = await _start(request, agent_id, ExecutionSource.API, "execute")
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
                    credits_used=last["credits_used"], latency_ms=last["latency_ms"])
    elif last["type"] == "error":
        data["error"] = {"code": last["code"], "message": last["message"]}
    return JsonResponse({"data": data})
