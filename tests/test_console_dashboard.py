"""The dashboard at the admin index, against rows whose figures are known."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.credits import account_for, do_grant_credits, do_post_entry
from accounts.models import CreditEntryKind
from executions.dashboard import dashboard
from executions.models import Execution, ExecutionState
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db


def make(workspace, state, *, finished_ago=None, created_ago=None, **fields):
    execution = ExecutionFactory(workspace=workspace, state=state, **fields)
    now = timezone.now()
    update = {}
    if created_ago is not None:
        update["created_at"] = now - created_ago
    if finished_ago is not None:
        update["finished_at"] = now - finished_ago
        update["started_at"] = now - finished_ago - timedelta(seconds=1)
    Execution.objects.filter(id=execution.id).update(**update)
    return execution


@pytest.fixture
def rows(tenant, other_tenant):
    a, b = tenant.workspace, other_tenant.workspace
    minute, hours = timedelta(minutes=1), timedelta(hours=3)
    make(a, ExecutionState.QUEUED, created_ago=timedelta(minutes=10))
    make(a, ExecutionState.QUEUED, created_ago=timedelta(minutes=2))
    make(b, ExecutionState.QUEUED, created_ago=timedelta(minutes=30))
    make(a, ExecutionState.RUNNING)
    make(a, ExecutionState.AWAITING_APPROVAL, created_ago=hours)
    make(a, ExecutionState.COMPLETED, finished_ago=minute, created_ago=2 * minute)
    refunded = make(a, ExecutionState.COMPLETED, finished_ago=hours, created_ago=hours)  # not in the last hour
    make(a, ExecutionState.FAILED, finished_ago=minute, failure_reason="provider_timeout", created_ago=hours)
    make(b, ExecutionState.FAILED, finished_ago=2 * hours, failure_reason="provider_timeout", created_ago=hours)
    make(b, ExecutionState.FAILED, finished_ago=minute, failure_reason="approval_rejected", created_ago=hours)
    make(b, ExecutionState.FAILED, finished_ago=timedelta(days=2), failure_reason="old", created_ago=timedelta(days=2))
    account_a, account_b = account_for(a, None), account_for(b, None)
    do_grant_credits(account_a, Decimal(100))
    do_grant_credits(account_b, Decimal(100))
    do_post_entry(account_a.id, CreditEntryKind.CHARGE, Decimal("-2.5"))
    do_post_entry(account_a.id, CreditEntryKind.CHARGE, Decimal("-1.25"), execution_id=refunded.id)
    do_post_entry(account_a.id, CreditEntryKind.CHARGE, Decimal("-1"))
    do_post_entry(account_a.id, CreditEntryKind.REFUND, Decimal("1"), execution_id=refunded.id)  # given back
    do_post_entry(account_b.id, CreditEntryKind.CHARGE, Decimal("-4"))
    do_post_entry(account_b.id, CreditEntryKind.HOLD, Decimal("-50"))  # a hold is not spent
    return a, b


def test_the_figures(rows):
    a, b = rows
    board = dashboard()
    total = board.total
    assert total.states == {"queued": 3, "running": 1, "awaiting_approval": 1, "completed": 2, "failed": 4}
    assert total.queue_depth == 3
    assert timedelta(minutes=29) < total.oldest_queued_for < timedelta(minutes=31)
    assert total.started_last_hour == 5  # 3 queued, the running one, the completed one of 2 min ago
    assert total.finished_last_hour == {"completed": 1, "failed": 2}
    assert total.failures == {"provider_timeout": 2, "approval_rejected": 1}
    assert total.credits_today == Decimal("7.75")
    per = {workspace.id: figures for workspace, figures in board.workspaces}
    assert set(per) == {a.id, b.id}
    assert per[a.id].queue_depth == 2 and per[b.id].queue_depth == 1
    assert per[a.id].failures == {"provider_timeout": 1}
    assert per[b.id].failures == {"provider_timeout": 1, "approval_rejected": 1}
    assert per[a.id].credits_today == Decimal("3.75") and per[b.id].credits_today == Decimal("4")
    assert per[a.id].finished_last_hour == {"completed": 1, "failed": 1}


def test_the_admin_index_shows_them_in_a_constant_number_of_queries(client, rows):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    with CaptureQueriesContext(connection) as first:
        page = client.get("/admin/").content.decode()
    assert 'id="sr-dashboard"' in page
    assert "queue depth<b>3</b>" in page
    assert "credits spent today<b>7.75</b>" in page
    assert "provider_timeout</a>: 2" in page
    a, b = rows
    assert f'data-workspace="{a.id}"' in page and f'data-workspace="{b.id}"' in page
    for _ in range(5):  # more workspaces, the same queries
        from tests.factories import WorkspaceFactory

        make(WorkspaceFactory(), ExecutionState.QUEUED)
    with CaptureQueriesContext(connection) as more:
        client.get("/admin/")
    assert len(more) == len(first)


def test_staff_without_the_execution_permission_see_no_dashboard(client, rows):
    User.objects.create_user("clerk", password="pw", is_staff=True)
    client.login(username="clerk", password="pw")
    page = client.get("/admin/").content.decode()
    assert 'id="sr-dashboard"' not in page
