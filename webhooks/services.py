"""Writes of webhook endpoints: register (with its secret, within the workspace's limit), delete, re-enable."""

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from accounts.models import Workspace
from core.errors import ApiError
from webhooks.models import WebhookEndpoint
from webhooks.signing import new_secret


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


@transaction.atomic
def check_create_endpoint(*, workspace: Workspace, url: str, events: list[str], description: str = "") -> NewEndpoint:
    """At most WEBHOOK_MAX_ENDPOINTS per workspace (409 `too_many_webhooks`): counted under the
    workspace row's lock, so concurrent registrations cannot pass it together."""
    Workspace.objects.select_for_update().filter(id=workspace.id).first()
    limit = settings.WEBHOOK_MAX_ENDPOINTS
    if WebhookEndpoint.objects.filter(workspace=workspace).count() >= limit:
        raise ApiError(409, "too_many_webhooks", f"A workspace has at most {limit} webhook endpoints.")
    secret = new_secret()
    endpoint = WebhookEndpoint.objects.create(
        tenant_id=workspace.tenant_id,
        workspace=workspace,
        url=url,
        events=list(dict.fromkeys(events)),
        secret=secret,
        description=description,
    )
    return NewEndpoint(endpoint=endpoint, secret=secret)


def do_delete_endpoint(*, endpoint: WebhookEndpoint) -> None:
    """One statement: its deliveries and their log go with it, by the database's ON DELETE CASCADE
    (webhooks/migrations/0002_cascade_in_the_database.py), so an attempt a worker writes meanwhile
    cannot make it fail; that worker's attempt then ends quietly (webhooks/delivery.py)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {WebhookEndpoint._meta.db_table} WHERE id = %s", [endpoint.id])


def do_enable_endpoints(*, endpoints) -> int:
    """The admin's re-enable: the failure count starts over."""
    return endpoints.update(
        enabled=True, disabled_at=None, disabled_reason="", consecutive_failures=0, failing_since=None
    )
