"""Refunds of a finished execution's credits (executions/refunds.py, accounts/credits.check_refund_credits):
a `refund` ledger entry linked to it, at most what was charged, never twice (also when two refunds
race, each on its own database connection), through the admin (its own permission) and the service."""

import threading
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client

from accounts.credits import AlreadyRefunded, account_for, check_refund_credits, do_grant_credits
from accounts.models import CreditAccount, CreditEntry
from core.errors import ApiError
from executions.models import Execution, ExecutionState
from executions.refunds import check_refund_execution
from tests.factories import ApiKeyFactory, CustomerFactory
from tests.helpers import data_of, execute, execution_uuid

pytestmark = pytest.mark.django_db(transaction=True)

# as tests/test_credits.py: hold 10 + 2 * ceil(4000 / 1000) = 18; a short run costs 10 + 2 = 12
RULES = {"base": 10, "per_1k_tokens": 2, "max_tokens": 4000}
COST = Decimal(12)


@pytest.fixture
def customer_key(tenant):
    customer = CustomerFactory(workspace=tenant.workspace, external_id="cus_1")
    issued = ApiKeyFactory(workspace=tenant.workspace, name="customer user", customer=customer)
    do_grant_credits(account_for(tenant.workspace, issued.api_key.principal), Decimal(100))
    return {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{tenant.workspace.id}"}


@pytest.fixture
def paid_agent(tenant, make_agent):
    agent = make_agent(tenant.workspace, chunk_delay_ms=0, reply="a short answer")
    agent.credit_rules = RULES
    agent.save(update_fields=["credit_rules"])
    return agent


@pytest.fixture
def charged(api, customer_key, paid_agent) -> Execution:
    """A completed execution the customer was charged 12 credits for (balance 88)."""
    data = data_of(execute(api, paid_agent, headers=customer_key))
    assert data["status"] == "completed" and data["credits_used"] == 12
    return Execution.objects.get(id=execution_uuid(data["execution_id"]))


def account() -> CreditAccount:
    return CreditAccount.objects.get(customer__external_id="cus_1")


def refunds(execution) -> list[tuple]:
    return list(CreditEntry.objects.filter(execution_id=execution.id, kind="refund").values_list("amount", "note"))


def assert_ledger_adds_up():
    entries = list(account().entries.order_by("id"))
    assert sum((entry.amount for entry in entries), Decimal(0)) == account().balance
    running = Decimal(0)
    for entry in entries:
        running += entry.amount
        assert entry.balance_after == running


@pytest.fixture
def admin():
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


def url(execution) -> str:
    return f"/admin/executions/execution/{execution.id}/actions/refund/"


def test_a_full_refund_through_the_admin(admin, charged):
    page = admin.get(url(charged)).content.decode()
    assert 'value="12.000000"' in page  # what was charged, the default

    response = admin.post(url(charged), {"amount": "12", "note": ""})
    assert response.status_code == 302
    assert account().balance == Decimal(100)
    assert refunds(charged) == [(COST, "refund by admin:ops")]
    entry = CreditEntry.objects.get(kind="refund")
    assert entry.balance_after == Decimal(100) and entry.account_id == charged.credit_account_id
    assert_ledger_adds_up()
    charged.refresh_from_db()
    assert charged.credits == COST  # what was charged stays on the row; the ledger holds the refund
    assert LogEntry.objects.get(object_id=str(charged.id)).change_message == (
        "refund: Refunded 12 credits (balance 100.000000)."
    )

    again = admin.post(url(charged), {"amount": "1", "note": ""})
    assert again.status_code == 409  # refunded already: the action is not offered any more
    assert account().balance == Decimal(100) and len(refunds(charged)) == 1


def test_a_partial_refund_then_no_other(charged):
    entry = check_refund_execution(execution=charged, amount=Decimal("4.5"), note="goodwill")
    assert entry.amount == Decimal("4.5") and entry.execution_id == charged.id
    assert account().balance == Decimal("92.5")
    with pytest.raises(ApiError) as raised:
        check_refund_execution(execution=charged, amount=Decimal("1"))
    assert raised.value.code == "already_refunded"
    assert account().balance == Decimal("92.5")
    assert_ledger_adds_up()


def test_at_most_what_was_charged(admin, charged):
    response = admin.post(url(charged), {"amount": "12.000001", "note": ""})
    assert response.status_code == 400 and b"At most the 12" in response.content
    for amount in ("0", "-1", "abc"):
        assert admin.post(url(charged), {"amount": amount, "note": ""}).status_code == 400
    assert refunds(charged) == [] and account().balance == Decimal(88)
    with pytest.raises(ApiError) as raised:
        check_refund_execution(execution=charged, amount=Decimal("12.5"))
    assert (raised.value.status_code, raised.value.code) == (400, "refund_exceeds_charge")
    assert check_refund_execution(execution=charged, amount=COST).amount == COST  # exactly the charge is fine


def test_nothing_charged_or_not_finished(api, customer_key, paid_agent, tenant, workflow_agent):
    free = Execution.objects.get(
        id=execution_uuid(data_of(execute(api, workflow_agent({"id": "a", "type": "ai"}), tenant))["execution_id"])
    )
    with pytest.raises(ApiError) as raised:
        check_refund_execution(execution=free)
    assert raised.value.code == "nothing_to_refund"
    running = Execution.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, source="api", state=ExecutionState.RUNNING
    )
    with pytest.raises(ApiError) as raised:
        check_refund_execution(execution=running)
    assert raised.value.code == "execution_not_finished"


def test_the_refund_permission(charged):
    user = User.objects.create_user("operator", "o@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_execution", "change_execution"], content_type__app_label="executions"
        )
    )
    client = Client()
    client.force_login(user)
    assert client.post(url(charged), {"amount": "12"}).status_code == 403
    assert refunds(charged) == []
    user.user_permissions.add(Permission.objects.get(codename="refund_execution"))
    client.force_login(User.objects.get(id=user.id))
    assert client.post(url(charged), {"amount": "12"}).status_code == 302
    assert account().balance == Decimal(100)


def _race(target, count: int = 4) -> list:
    """Run target() in `count` threads released at once, each with its own database connection."""
    barrier = threading.Barrier(count)
    outcomes = []

    def run():
        try:
            barrier.wait()
            outcomes.append(target())
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_concurrent_refunds_refund_once(charged):
    outcomes = _race(lambda: check_refund_execution(execution=charged, amount=COST))
    assert sum(isinstance(o, CreditEntry) for o in outcomes) == 1
    assert sum(isinstance(o, AlreadyRefunded) for o in outcomes) == 3, outcomes
    assert account().balance == Decimal(100) and len(refunds(charged)) == 1
    assert_ledger_adds_up()


def test_the_database_refuses_a_second_refund_even_without_the_row_lock(charged):
    """The ledger's own guard (a unique constraint): refunds raced without the execution's lock."""
    outcomes = _race(lambda: check_refund_credits(execution_id=charged.id, amount=COST))
    assert sum(isinstance(o, CreditEntry) for o in outcomes) == 1
    assert all(isinstance(o, (CreditEntry, AlreadyRefunded)) for o in outcomes), outcomes
    assert account().balance == Decimal(100) and len(refunds(charged)) == 1
    assert_ledger_adds_up()
