"""Credits bought in an app: RevenueCat's webhook events turned into grants to the customer they
name (`app_user_id` = Customer.external_id), by the workspace's product -> credits table.

Only purchases grant (GRANTING_TYPES); every event is recorded (PurchaseEvent) with what was done
with it. RevenueCat retries an event until it gets a 2xx, so an event it should not have sent (a
type we ignore, an unknown product or customer) is answered as received, never as an error. The
event row and the grant are one transaction, and the row is unique per workspace and event id: a
redelivered event, even one that arrives while the first delivery is still being handled, waits on
that unique index and then grants nothing.
"""

import hmac
import uuid
from decimal import Decimal

from django.db import IntegrityError, transaction

from accounts.credits import do_grant_credits
from accounts.models import (
    CreditAccount,
    CreditProduct,
    Customer,
    PurchaseEvent,
    PurchaseEventOutcome,
    RevenueCatIntegration,
)
from core.errors import ApiError

GRANTING_TYPES = ("INITIAL_PURCHASE", "RENEWAL", "NON_RENEWING_PURCHASE")


def check_revenuecat_authorization(*, workspace_id: str, authorization: str) -> RevenueCatIntegration:
    """The workspace's integration when `authorization` is its configured header value. A workspace
    without one (or no such workspace) is a 404, as if the route did not exist; a wrong value a 401."""
    try:
        workspace_uuid = uuid.UUID(workspace_id)
    except ValueError:
        raise ApiError(404, "not_found", "No RevenueCat webhook is configured here.") from None
    integration = RevenueCatIntegration.objects.filter(workspace_id=workspace_uuid).first()
    if integration is None or not integration.authorization:
        raise ApiError(404, "not_found", "No RevenueCat webhook is configured here.")
    if not hmac.compare_digest(authorization.encode(), integration.authorization.encode()):
        raise ApiError(401, "invalid_authorization", "The Authorization header is not this webhook's.")
    return integration


def _outcome(integration: RevenueCatIntegration, event: dict) -> tuple[str, CreditProduct | None, Customer | None]:
    if event.get("type") not in GRANTING_TYPES:
        return PurchaseEventOutcome.IGNORED_TYPE, None, None
    if event.get("environment") == "SANDBOX" and not integration.grant_sandbox:
        return PurchaseEventOutcome.SANDBOX, None, None
    product = CreditProduct.objects.filter(
        workspace_id=integration.workspace_id, product_id=event.get("product_id") or ""
    ).first()
    if product is None:
        return PurchaseEventOutcome.UNKNOWN_PRODUCT, None, None
    customer = Customer.objects.filter(
        workspace_id=integration.workspace_id, external_id=event.get("app_user_id") or ""
    ).first()
    if customer is None:
        return PurchaseEventOutcome.UNKNOWN_CUSTOMER, product, None
    return PurchaseEventOutcome.GRANTED, product, customer


def do_record_purchase_event(*, integration: RevenueCatIntegration, event: dict) -> tuple[PurchaseEvent, bool]:
    """Record one event (RevenueCat's `event` object) and grant its product's credits to its
    customer when it is a purchase. Returns the event's row and whether this call recorded it
    (False: a redelivery, nothing done)."""
    workspace_id = integration.workspace_id
    try:
        with transaction.atomic():
            outcome, product, customer = _outcome(integration, event)
            row = PurchaseEvent.objects.create(
                workspace_id=workspace_id,
                event_id=event["id"],
                type=event.get("type", ""),
                app_user_id=str(event.get("app_user_id") or "")[:255],
                product_id=str(event.get("product_id") or "")[:255],
                environment=str(event.get("environment") or "")[:32],
                outcome=outcome,
                payload=event,
            )
            if outcome == PurchaseEventOutcome.GRANTED:
                account, _ = CreditAccount.objects.get_or_create(workspace_id=workspace_id, customer=customer)
                entry = do_grant_credits(
                    account, Decimal(product.credits), note=f"revenuecat {event['type']} {event['id']}"[:200]
                )
                row.credits, row.credit_entry = product.credits, entry
                row.save(update_fields=["credits", "credit_entry"])
    except IntegrityError:  # the event's row exists: delivered before (or right now, by a concurrent request)
        return PurchaseEvent.objects.get(workspace_id=workspace_id, event_id=event["id"]), False
    return row, True
