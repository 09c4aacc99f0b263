"""Reads of webhook endpoints, scoped to the caller's workspace."""

from core.errors import not_found
from core.ids import parse_prefixed_id
from webhooks.models import WebhookEndpoint


def workspace_endpoints(workspace):
    return WebhookEndpoint.objects.filter(workspace=workspace).order_by("created_at")


def get_endpoint(workspace, webhook_id: str) -> WebhookEndpoint:
    """The workspace's endpoint; another workspace's (or none) is 404."""
    parsed = parse_prefixed_id(webhook_id, "webhook")
    endpoint = WebhookEndpoint.objects.filter(id=parsed, workspace=workspace).first() if parsed else None
    if endpoint is None:
        raise not_found("webhook endpoint")
    return endpoint
