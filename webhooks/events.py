"""The four events, their payloads, and their outbox rows: written in the transaction of the
transition they report (executions/terminal.py, executions/suspension.py), one delivery per
enabled endpoint of the workspace that asked for the event, published to Celery on commit."""

import json
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.timestamps import iso_utc
from executions.models import Execution, ExecutionState
from executions.purge import register_purge_effect
from executions.suspension import SuspensionOutcome, register_suspension_effect
from executions.terminal import TerminalOutcome, register_terminal_effect
from webhooks.delivery import publish_on_commit
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

TERMINAL_EVENTS = {
    ExecutionState.COMPLETED: WebhookEvent.EXECUTION_COMPLETED,
    ExecutionState.FAILED: WebhookEvent.EXECUTION_FAILED,
    ExecutionState.CANCELLED: WebhookEvent.EXECUTION_CANCELLED,
}
# An execution's outputs go into its payload up to this size as JSON; bigger ones are left out
# (`outputs_truncated: true`: read them with GET /executions/{id}).
OUTPUTS_MAX_BYTES = 64 * 1024


def _subscribed(workspace_id, event_type: str) -> list[WebhookEndpoint]:
    return list(
        WebhookEndpoint.objects.filter(workspace_id=workspace_id, enabled=True, events__contains=[event_type]).only(
            "id"
        )
    )


def _responder(execution: Execution) -> dict | None:
    if execution.agent_version_id:
        version = execution.agent_version
        return {"type": "agent", "id": f"agent:{version.agent_id}", "version_id": str(version.id)}
    if execution.skill_version_id:
        version = execution.skill_version
        return {"type": "skill", "slug": version.skill.slug, "version_id": str(version.id)}
    return None


def execution_data(execution: Execution) -> dict:
    """What every event says of the execution: ids, state, who ran it, timing, usage. Never its
    inputs (they may hold what a workspace would not send to a URL) nor any key."""
    return {
        "execution_id": execution.public_id,
        "status": execution.state,
        "workspace_id": f"workspace:{execution.workspace_id}",
        "source": execution.source,
        "responder": _responder(execution),
        "parent_execution_id": f"execution:{execution.parent_id}" if execution.parent_id else None,
        "batch_key": execution.batch_key or None,
        "created_at": iso_utc(execution.created_at),
        "started_at": iso_utc(execution.started_at),
        "finished_at": iso_utc(execution.finished_at),
        "usage": execution.usage(),
        "credits_charged": str(execution.credits),
    }


def payload(event_type: str, data: dict) -> dict:
    return {"type": event_type, "timestamp": iso_utc(timezone.now()), "data": data}


def enqueue(endpoints: list[WebhookEndpoint], event_type: str, execution_id, body: dict) -> list[WebhookDelivery]:
    """The outbox rows (in the caller's transaction) and their task messages after its commit."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint_id=endpoint.id,
                event_type=event_type,
                execution_id=execution_id,
                body=text,
                next_attempt_at=now,
                dispatched_at=now,
                retry_until=now + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS),
            )
            for endpoint in endpoints
        ]
    )
    publish_on_commit([delivery.id for delivery in deliveries])
    return deliveries


def _load(execution_id) -> Execution:
    return Execution.objects.select_related("agent_version", "skill_version__skill").get(id=execution_id)


def on_terminal(outcome: TerminalOutcome) -> None:
    event_type = TERMINAL_EVENTS[outcome.state]
    endpoints = _subscribed(outcome.workspace_id, event_type)
    if not endpoints:
        return
    data = execution_data(_load(outcome.execution_id))
    if outcome.state == ExecutionState.COMPLETED:
        size = len(json.dumps(outcome.outputs, separators=(",", ":"), ensure_ascii=False).encode())
        data["outputs"] = outcome.outputs if size <= OUTPUTS_MAX_BYTES else None
        if size > OUTPUTS_MAX_BYTES:
            data["outputs_truncated"] = True
    else:
        data["error"] = outcome.error
    enqueue(endpoints, event_type, outcome.execution_id, payload(event_type, data))


def on_suspended(outcome: SuspensionOutcome) -> None:
    event_type = WebhookEvent.EXECUTION_SUSPENDED
    endpoints = _subscribed(outcome.workspace_id, event_type)
    if not endpoints:
        return
    data = execution_data(_load(outcome.execution_id))
    data["suspension"] = {key: value for key, value in outcome.payload.items() if key != "status"}
    enqueue(endpoints, event_type, outcome.execution_id, payload(event_type, data))


# What a purged execution's deliveries keep of their event: who, when, how it ended; not its content.
PURGED_KEEPS = ("execution_id", "status", "workspace_id", "source", "responder", "parent_execution_id",
                "batch_key", "created_at", "started_at", "finished_at", "usage", "credits_charged")  # fmt: skip


def on_purged(execution_id) -> None:
    """Erase the execution's outputs, error and suspension from the bodies of its deliveries (the
    log keeps them for WEBHOOK_DELIVERY_RETENTION_DAYS otherwise). A delivery still to be sent goes
    out with the erased body and `"purged": true`; it is signed at each attempt, so it verifies."""
    for delivery in WebhookDelivery.objects.select_for_update().filter(execution_id=execution_id).only("id", "body"):
        body = json.loads(delivery.body)
        body["data"] = {key: value for key, value in body["data"].items() if key in PURGED_KEEPS} | {"purged": True}
        delivery.body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        delivery.save(update_fields=["body"])


def wire_webhook_effects() -> None:
    register_terminal_effect(on_terminal)
    register_suspension_effect(on_suspended)
    register_purge_effect(on_purged)
