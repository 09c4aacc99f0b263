"""POST /inbound/revenuecat/{workspace_id}: RevenueCat's webhook events (replayed from its documented
sample events, https://www.revenuecat.com/docs/integrations/webhooks/sample-events) turned into credit
grants by the workspace's product -> credits table, once per event id."""

import copy
import threading
from decimal import Decimal

import pytest
from django.db import connection

from accounts.models import (
    CreditAccount,
    CreditEntry,
    CreditProduct,
    PurchaseEvent,
    RevenueCatIntegration,
)
from accounts.purchases import do_record_purchase_event
from tests.factories import CustomerFactory, TenantFactory
from tests.helpers import post
from tests.test_bad_input import BAD_JSON_BODIES

pytestmark = pytest.mark.django_db(transaction=True)

AUTHORIZATION = "Bearer rc_whsec_4f1b2c3d"

# RevenueCat's sample "Initial Purchase" event, as documented (api_version 1.0)
INITIAL_PURCHASE = {
    "event": {
        "event_timestamp_ms": 1658726378679,
        "product_id": "com.subscription.weekly",
        "period_type": "NORMAL",
        "purchased_at_ms": 1658726374000,
        "expiration_at_ms": 1659331174000,
        "environment": "PRODUCTION",
        "entitlement_id": None,
        "entitlement_ids": ["pro"],
        "presented_offering_id": None,
        "transaction_id": "123456789012345",
        "original_transaction_id": "123456789012345",
        "is_family_share": False,
        "country_code": "US",
        "app_user_id": "1234567890",
        "aliases": ["$RCAnonymousID:8069238d6049ce87cc529853916d624c"],
        "original_app_user_id": "$RCAnonymousID:87c6049c58069238dce29853916d624c",
        "currency": "USD",
        "price": 4.99,
        "price_in_purchased_currency": 4.99,
        "subscriber_attributes": {"$email": {"updated_at_ms": 1662955084635, "value": "firstlast@gmail.com"}},
        "store": "APP_STORE",
        "takehome_percentage": 0.7,
        "offer_code": None,
        "type": "INITIAL_PURCHASE",
        "id": "12345678-1234-1234-1234-123456789012",
        "app_id": "1234567890",
    },
    "api_version": "1.0",
}


def sample(type_: str, event_id: str, **fields) -> dict:
    """Another documented event type on the sample's shape (RENEWAL, CANCELLATION, ...)."""
    body = copy.deepcopy(INITIAL_PURCHASE)
    body["event"].update(type=type_, id=event_id, **fields)
    return body


RENEWAL = sample(
    "RENEWAL",
    "22345678-1234-1234-1234-123456789012",
    event_timestamp_ms=1658726405017,
    purchased_at_ms=1658755132000,
    expiration_at_ms=1659359932000,
    transaction_id="170000869511114",
    is_trial_conversion=False,
)
CANCELLATION = sample(
    "CANCELLATION",
    "32345678-1234-1234-1234-123456789012",
    cancel_reason="UNSUBSCRIBE",
    event_timestamp_ms=1658726522314,
)
NON_RENEWING_PURCHASE = sample(
    "NON_RENEWING_PURCHASE",
    "42345678-1234-1234-1234-123456789012",
    product_id="credits_500",
    period_type="NORMAL",
    expiration_at_ms=None,
)


@pytest.fixture
def shop(tenant):
    """A workspace with RevenueCat configured, two products, and the customer of the samples."""
    integration = RevenueCatIntegration.objects.create(workspace=tenant.workspace, authorization=AUTHORIZATION)
    CreditProduct.objects.create(workspace=tenant.workspace, product_id="com.subscription.weekly", credits=100)
    CreditProduct.objects.create(workspace=tenant.workspace, product_id="credits_500", credits=500)
    customer = CustomerFactory(workspace=tenant.workspace, external_id="1234567890")
    return integration, customer


def deliver(api, workspace, body, authorization=AUTHORIZATION):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return post(api, f"/inbound/revenuecat/{workspace.id}", body, headers)


def ledger(customer) -> list[tuple]:
    return list(
        CreditEntry.objects.filter(account__customer=customer)
        .order_by("id")
        .values_list("kind", "amount", "balance_after")
    )


def balance(customer) -> Decimal:
    return CreditAccount.objects.get(customer=customer).balance


def test_initial_purchase_renewal_and_non_renewing_purchase_grant_their_products_credits(api, tenant, shop):
    _, customer = shop
    first = deliver(api, tenant.workspace, INITIAL_PURCHASE)
    assert first.status_code == 200, first.text
    assert first.json()["data"] == {
        "event_id": "12345678-1234-1234-1234-123456789012",
        "outcome": "granted",
        "duplicate": False,
        "credits": 100.0,
    }
    assert deliver(api, tenant.workspace, RENEWAL).json()["data"]["outcome"] == "granted"
    assert deliver(api, tenant.workspace, NON_RENEWING_PURCHASE).json()["data"]["credits"] == 500.0
    assert ledger(customer) == [
        ("grant", Decimal("100"), Decimal("100")),
        ("grant", Decimal("100"), Decimal("200")),
        ("grant", Decimal("500"), Decimal("700")),
    ]
    assert balance(customer) == Decimal("700")
    event = PurchaseEvent.objects.get(event_id=RENEWAL["event"]["id"])
    assert (event.type, event.app_user_id, event.product_id, event.environment) == (
        "RENEWAL",
        "1234567890",
        "com.subscription.weekly",
        "PRODUCTION",
    )
    assert event.credit_entry.amount == Decimal("100") and event.payload["transaction_id"] == "170000869511114"


def test_a_cancellation_is_recorded_and_grants_nothing(api, tenant, shop):
    _, customer = shop
    deliver(api, tenant.workspace, INITIAL_PURCHASE)
    response = deliver(api, tenant.workspace, CANCELLATION)
    assert response.status_code == 200
    assert response.json()["data"] == {
        "event_id": CANCELLATION["event"]["id"],
        "outcome": "ignored_type",
        "duplicate": False,
        "credits": 0.0,
    }
    assert balance(customer) == Decimal("100") and len(ledger(customer)) == 1
    assert PurchaseEvent.objects.get(event_id=CANCELLATION["event"]["id"]).payload["cancel_reason"] == "UNSUBSCRIBE"


def test_a_redelivered_event_grants_once(api, tenant, shop):
    _, customer = shop
    assert deliver(api, tenant.workspace, INITIAL_PURCHASE).json()["data"]["duplicate"] is False
    again = deliver(api, tenant.workspace, INITIAL_PURCHASE)
    assert again.status_code == 200
    assert again.json()["data"] == {
        "event_id": INITIAL_PURCHASE["event"]["id"],
        "outcome": "granted",
        "duplicate": True,
        "credits": 100.0,
    }
    assert ledger(customer) == [("grant", Decimal("100"), Decimal("100"))]
    assert PurchaseEvent.objects.count() == 1


def test_concurrent_deliveries_of_one_event_grant_once(tenant, shop):
    integration, customer = shop
    deliveries = 8
    barrier = threading.Barrier(deliveries)
    created, errors = [], []

    def deliver_once():
        try:
            barrier.wait()
            created.append(do_record_purchase_event(integration=integration, event=INITIAL_PURCHASE["event"])[1])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver_once) for _ in range(deliveries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(created) == [False] * (deliveries - 1) + [True]
    assert ledger(customer) == [("grant", Decimal("100"), Decimal("100"))]
    assert balance(customer) == Decimal("100")


def test_unknown_product_unknown_customer_and_sandbox_are_answered_and_recorded(api, tenant, shop):
    _, customer = shop
    cases = [
        (sample("INITIAL_PURCHASE", "evt-unknown-product", product_id="com.other.monthly"), "unknown_product"),
        (sample("INITIAL_PURCHASE", "evt-unknown-customer", app_user_id="$RCAnonymousID:abc"), "unknown_customer"),
        (sample("INITIAL_PURCHASE", "evt-sandbox", environment="SANDBOX"), "sandbox"),
        (sample("TEST", "evt-test"), "ignored_type"),
    ]
    for body, outcome in cases:
        response = deliver(api, tenant.workspace, body)
        assert response.status_code == 200, response.text
        assert response.json()["data"]["outcome"] == outcome
        assert PurchaseEvent.objects.get(event_id=body["event"]["id"]).outcome == outcome
    assert not CreditEntry.objects.exists()
    assert not CreditAccount.objects.filter(customer=customer).exists()


def test_sandbox_purchases_grant_when_the_integration_says_so(api, tenant, shop):
    integration, customer = shop
    RevenueCatIntegration.objects.filter(pk=integration.pk).update(grant_sandbox=True)
    response = deliver(api, tenant.workspace, sample("INITIAL_PURCHASE", "evt-sandbox", environment="SANDBOX"))
    assert response.json()["data"]["outcome"] == "granted"
    assert balance(customer) == Decimal("100")


def test_authorization_and_workspace(api, tenant, shop):
    for authorization in (None, "", "Bearer wrong", AUTHORIZATION + "x"):
        response = deliver(api, tenant.workspace, INITIAL_PURCHASE, authorization)
        assert response.status_code == 401, authorization
        assert response.json()["error"]["code"] == "invalid_authorization"
    unconfigured = TenantFactory(name="No RevenueCat")
    assert deliver(api, unconfigured.workspace, INITIAL_PURCHASE).status_code == 404
    assert (
        post(api, "/inbound/revenuecat/not-a-uuid", INITIAL_PURCHASE, {"Authorization": AUTHORIZATION}).status_code
        == 404
    )
    assert not PurchaseEvent.objects.exists() and not CreditEntry.objects.exists()


def test_an_event_grants_only_in_the_workspace_of_its_url(api, tenant, other_tenant, shop):
    _, customer = shop
    RevenueCatIntegration.objects.create(workspace=other_tenant.workspace, authorization="Bearer other-secret")
    CreditProduct.objects.create(workspace=other_tenant.workspace, product_id="com.subscription.weekly", credits=7)
    other_customer = CustomerFactory(workspace=other_tenant.workspace, external_id="1234567890")
    # this workspace's secret does not open the other's URL
    assert deliver(api, other_tenant.workspace, INITIAL_PURCHASE).status_code == 401
    assert deliver(api, other_tenant.workspace, INITIAL_PURCHASE, "Bearer other-secret").json()["data"]["credits"] == 7
    assert balance(other_customer) == Decimal("7")
    assert not CreditAccount.objects.filter(customer=customer).exists()
    # the same event id in each workspace is each one's own event
    assert deliver(api, tenant.workspace, INITIAL_PURCHASE).json()["data"]["duplicate"] is False
    assert balance(customer) == Decimal("100") and balance(other_customer) == Decimal("7")


def test_a_body_that_is_not_an_event_is_a_400(api, tenant, shop):
    for body in ({}, {"event": {"type": "RENEWAL"}}, {"event": {"id": "", "type": "RENEWAL"}}, {"event": "x"}):
        response = deliver(api, tenant.workspace, body)
        assert response.status_code == 400, body
    assert deliver(api, tenant.workspace, "not json").status_code == 400
    assert not PurchaseEvent.objects.exists()


def test_bad_json_from_revenuecat_is_a_400_with_its_code(api, tenant, shop):
    for name, body, code, _ in BAD_JSON_BODIES:
        content = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        response = api.post(
            f"/inbound/revenuecat/{tenant.workspace.id}",
            content=content,
            headers={"Authorization": AUTHORIZATION, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == code, name
    assert not PurchaseEvent.objects.exists()
