"""The console's executions list: its columns, its filters, children under their parent, and a
number of queries that does not grow with the rows or their events."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions.models import ExecutionEvent, ExecutionSource, ExecutionState
from tests.factories import CustomerFactory, ExecutionFactory, PrincipalFactory, SkillFactory

pytestmark = pytest.mark.django_db
LIST = "/admin/executions/execution/"


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    return client


def rows(response) -> list:
    return list(response.context["cl"].result_list)


def test_columns_show_responder_state_duration_cost_credits_and_failure(admin_client, agent):
    now = timezone.now()
    failed = ExecutionFactory(
        agent=agent,
        state=ExecutionState.FAILED,
        failure_reason="provider_timeout",
        started_at=now - timedelta(seconds=2, milliseconds=500),
        finished_at=now,
        cost_usd=Decimal("0.012300"),
        credits=Decimal("7.500000"),
    )
    page = admin_client.get(LIST).content.decode()
    assert str(failed.id).replace("-", "")[-8:] in page
    assert f"{agent.name} v1" in page
    assert 'class="sr-state sr-state-failed"' in page
    assert "2.50 s" in page
    assert "$0.0123" in page and "7.5" in page
    assert "provider_timeout" in page
    assert "executions/console.css" in page


def test_batch_items_and_sub_executions_are_under_their_parent(admin_client, agent):
    batch = ExecutionFactory(agent=agent, source=ExecutionSource.BATCH)
    items = [ExecutionFactory(parent=batch, source=ExecutionSource.BATCH_ITEM, batch_key=f"k{i}") for i in range(3)]
    lone = ExecutionFactory(agent=agent)
    response = admin_client.get(LIST)
    assert {row.id for row in rows(response)} == {batch.id, lone.id}
    page = response.content.decode()
    assert f'href="/admin/executions/execution/?parent={batch.id}">3 items</a>' in page

    children = admin_client.get(LIST, {"parent": str(batch.id)})
    assert {row.id for row in rows(children)} == {item.id for item in items}
    everything = admin_client.get(LIST, {"level": "all"})
    assert len(rows(everything)) == 5
    only_children = admin_client.get(LIST, {"level": "children"})
    assert {row.id for row in rows(only_children)} == {item.id for item in items}
    # a search by id finds a child too
    assert [row.id for row in rows(admin_client.get(LIST, {"q": str(items[0].id)}))] == [items[0].id]
    assert rows(admin_client.get(LIST, {"parent": "not-an-id"})) == []


def test_filters(admin_client, tenant, agent, other_tenant):
    skill = SkillFactory(workspace=tenant.workspace)
    customer = CustomerFactory(workspace=tenant.workspace)
    principal = PrincipalFactory(workspace=tenant.workspace, customer=customer)
    by_agent = ExecutionFactory(agent=agent, state=ExecutionState.COMPLETED, source=ExecutionSource.STREAM)
    by_skill = ExecutionFactory(skill=skill, state=ExecutionState.FAILED, failure_reason="outputs_invalid")
    by_customer = ExecutionFactory(agent=agent, principal=principal, failure_reason="", source=ExecutionSource.CHAT)
    elsewhere = ExecutionFactory(workspace=other_tenant.workspace, state=ExecutionState.FAILED, failure_reason="x")
    cases = {
        "state": ({"state": "completed"}, {by_agent}),
        "source": ({"source": "chat"}, {by_customer}),
        "workspace": ({"workspace__id__exact": str(other_tenant.workspace.id)}, {elsewhere}),
        "agent": ({"agent": str(agent.id)}, {by_agent, by_customer}),
        "skill": ({"skill": str(skill.id)}, {by_skill}),
        "customer": ({"customer": str(customer.id)}, {by_customer}),
        "principal": ({"principal": str(principal.id)}, {by_customer}),
        "failure": ({"failure_reason": "outputs_invalid"}, {by_skill}),
        "date": ({"created_at__gte": (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S%z")}, None),
    }
    for name, (query, expected) in cases.items():
        response = admin_client.get(LIST, query)
        assert response.status_code == 200, name
        if expected is not None:
            assert {row.id for row in rows(response)} == {e.id for e in expected}, name
    page = admin_client.get(LIST).content.decode()
    assert "outputs_invalid" in page and "By failure reason" in page  # the failure reasons that occur
    today = timezone.now()
    dated = admin_client.get(LIST, {"created_at__year": today.year, "created_at__month": today.month})
    assert len(rows(dated)) == 4


def _executions_with_events(agent, count: int, events: int = 100):
    made = []
    for _ in range(count):
        execution = ExecutionFactory(agent=agent, finished=True, last_event_seq=events)
        ExecutionEvent.objects.bulk_create(
            ExecutionEvent(execution=execution, seq=seq, type="text", data={"type": "text", "text": "w "})
            for seq in range(1, events + 1)
        )
        ExecutionFactory(parent=execution)
        made.append(execution)
    return made


def test_the_list_makes_as_many_queries_for_100_executions_with_100_events_as_for_1(admin_client, agent):
    _executions_with_events(agent, 1)
    with CaptureQueriesContext(connection) as one:
        assert len(rows(admin_client.get(LIST))) == 1
    _executions_with_events(agent, 99)
    with CaptureQueriesContext(connection) as hundred:
        response = admin_client.get(LIST)
    assert len(rows(response)) == 100
    assert response.content.decode().count("1 subs</a>") == 100
    assert len(hundred) == len(one), [q["sql"][:120] for q in hundred.captured_queries]
