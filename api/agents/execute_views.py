"""The agents API's execute endpoints (spec/agents-execute.txt): sync, streaming and batch.

All are async views: the request is parsed and the execution created in one short sync call,
then the response follows the execution's event log without holding a thread.
"""

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse

from api.agents.execution_views import async_api_view, run_authenticated, sse_response
from executions.agent_executions import start_agent_batch, start_agent_execution
from executions.models import ExecutionSource
from executions.streaming import follow_events, relay_events


async def _start(request, agent_id, source, route):
    return await run_authenticated(request, start_agent_execution, agent_id, request, source, route)


@async_api_view("POST")
async def execute_stream(request, agent_id):
    """POST /agents/{agent_id}/execute/stream: `id: <seq>` + `data: <json>` frames to final/error."""
    execution = await _start(request, agent_id, ExecutionSource.STREAM, "execute/stream")
    return sse_response(relay_events(execution.id))


@async_api_view("POST")
async def execute_batch(request, agent_id):
    """POST /agents/{agent_id}/execute/batch: the batch's events, batch_started to batch_completed."""
    batch = await run_authenticated(request, start_agent_batch, agent_id, request)
    return sse_response(relay_events(batch.id))


@async_api_view("POST")
async def execute_sync(request, agent_id):
    """POST /agents/{agent_id}/execute: blocks until the execution ends (or the sync timeout)."""
    execution = await _start(request, agent_id, ExecutionSource.API, "execute")
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
    return JsonResponse({"data": data})
