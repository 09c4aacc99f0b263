"""POST /agents/{agent_id}/execute/batch: items as child executions over the worker fleet."""

from decimal import Decimal

import httpx
import pytest

from accounts.credits import account_for, do_grant_credits
from executions.models import Execution, ExecutionEvent, ExecutionState
from tests.helpers import auth, execution_uuid, read_stream, stream, wait_for

BATCH = "execute/batch"


def batch_items(count, message="item {i}"):
    return [{"key": f"item-{i}", "message": message.format(i=i)} for i in range(count)]


@pytest.mark.django_db(transaction=True)
def test_batch_with_mixed_success_and_failure(api, tenant, make_agent):
    agent = make_agent(tenant.workspace, reply="summary done", fail_on="FAIL")
    items = [
        {"key": "a", "message": "Summarize this"},
        {"key": "b", "message": "FAIL here"},
        {"key": "c", "message": "Translate this"},
        {"key": "d", "message": "FAIL too"},
        {"key": "e", "message": "ok"},
    ]
    events = stream(api, "POST", f"/agents/{agent.id}/{BATCH}", auth(tenant), {"items": items})
    kinds = [e.data["type"] for e in events]
    assert kinds == ["batch_started"] + ["batch_progress"] * 5 + ["batch_completed"]
    started = events[0].data
    assert started["total"] == 5
    assert [item["key"] for item in started["items"]] == ["a", "b", "c", "d", "e"]
    progress = {e.data["key"]: e.data for e in events if e.data["type"] == "batch_progress"}
    assert {key: p["status"] for key, p in progress.items()} == {
        "a": "completed",
        "b": "failed",
        "c": "completed",
        "d": "failed",
        "e": "completed",
    }
    assert progress["a"]["output"]["text"] == "summary done"
    assert progress["b"]["error"]["code"] == "provider_error"
    assert sorted(p["completed"] for p in progress.values()) == [1, 2, 3, 4, 5]
    assert events[-1].data["total"] == 5 and events[-1].data["succeeded"] == 3 and events[-1].data["failed"] == 2
    assert [e.data["seq"] for e in events] == list(range(1, 8))

    batch = Execution.objects.get(id=execution_uuid(started["execution_id"]))
    assert batch.source == "batch" and batch.state == ExecutionState.COMPLETED
    children = Execution.objects.filter(parent=batch)
    assert children.count() == 5
    assert {c.batch_key: str(c.id) for c in children} == {
        item["key"]: execution_uuid(item["item_execution_id"]) for item in started["items"]
    }
    # the stream can be read again, and each item has its own
    again = stream(api, "GET", f"/executions/{batch.id}/events", auth(tenant))
    assert [e.data for e in again] == [e.data for e in events]
    item_events = stream(api, "GET", f"/executions/{children.get(batch_key='a').id}/events", auth(tenant))
    assert item_events[-1].data["type"] == "final"


@pytest.mark.django_db(transaction=True)
def test_batch_items_spread_over_the_worker_processes(live, tenant, make_agent):
    agent = make_agent(tenant.workspace, chunk_delay_ms=50, reply=" ".join(["w"] * 10))
    events = read_stream("POST", f"{live}/agents/{agent.id}/{BATCH}", auth(tenant), {"items": batch_items(6)})
    assert events[-1].data["type"] == "batch_completed"
    assert events[-1].data["succeeded"] == 6
    batch_id = execution_uuid(events[0].data["execution_id"])
    starts = ExecutionEvent.objects.filter(execution__parent_id=batch_id, type="node_start").values_list(
        "created_at", flat=True
    )
    finals = ExecutionEvent.objects.filter(execution__parent_id=batch_id, type="final").values_list(
        "created_at", flat=True
    )
    # two worker processes: some items ran at the same time (an item started before another ended)
    assert min(finals) > sorted(starts)[1]


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_batch_cancels_its_items(live, tenant, make_agent):
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=" ".join(["w"] * 100))
    events = read_stream(
        "POST", f"{live}/agents/{agent.id}/{BATCH}", auth(tenant), {"items": batch_items(4)}, stop=lambda evs: True
    )
    batch_id = events[0].data["execution_id"]
    response = httpx.post(f"{live}/executions/{batch_id}/cancel", headers=auth(tenant), timeout=10)
    assert response.status_code == 200
    wait_for(
        lambda: (
            set(Execution.objects.filter(parent_id=execution_uuid(batch_id)).values_list("state", flat=True))
            == {ExecutionState.CANCELLED}
        )
    )
    rest = read_stream("GET", f"{live}/executions/{batch_id}/events", auth(tenant))
    assert rest[-1].data["type"] == "error" and rest[-1].data["status"] == "cancelled"


# --- validation (no worker needed: nothing is dispatched before commit) ------------------------------


def post_batch(client, agent, tenant, body, **headers):
    return client.post(
        f"/agents/{agent.id}/{BATCH}", data=body, content_type="application/json", headers={**auth(tenant), **headers}
    )


@pytest.mark.django_db
def test_exactly_the_item_limit_passes_one_more_fails(client, tenant, agent, settings):
    settings.BATCH_MAX_ITEMS = 100
    assert post_batch(client, agent, tenant, {"items": batch_items(100)}).status_code == 200
    assert Execution.objects.filter(source="batch_item").count() == 100
    response = post_batch(client, agent, tenant, {"items": batch_items(101)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_items"
    assert Execution.objects.filter(source="batch_item").count() == 100


@pytest.mark.django_db
@pytest.mark.parametrize(
    "items, code, field",
    [
        (None, "items_required", "items"),
        ([], "items_required", "items"),
        (["x"], "invalid_item", "items[0]"),
        ([{"message": "hi"}], "invalid_item_key", "items[0].key"),
        ([{"key": "k" * 129, "message": "hi"}], "invalid_item_key", "items[0].key"),
        ([{"key": "a", "message": "hi"}, {"key": "a", "message": "ho"}], "duplicate_item_key", "items[1].key"),
        ([{"key": "a", "message": "hi"}, {"key": "b"}], "message_required", "items[1].message"),
        ([{"key": "a", "message": "x" * 65537}], "invalid_message", "items[0].message"),
        ([{"key": "a", "message": "hi", "variables": []}], "invalid_variables", "items[0].variables"),
    ],
)
def test_item_validation_names_the_item(client, tenant, agent, items, code, field):
    response = post_batch(client, agent, tenant, {"items": items} if items is not None else {})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_a_key_of_128_characters_passes(client, tenant, agent):
    assert post_batch(client, agent, tenant, {"items": [{"key": "k" * 128, "message": "hi"}]}).status_code == 200


@pytest.mark.django_db
def test_batch_idempotency(client, tenant, agent):
    body = {"items": batch_items(3)}
    assert post_batch(client, agent, tenant, body, **{"Idempotency-Key": "batch-1"}).status_code == 200
    again = post_batch(client, agent, tenant, body, **{"Idempotency-Key": "batch-1"})
    assert again.status_code == 409
    batch = Execution.objects.get(source="batch")
    assert again.json()["error"]["execution_id"] == batch.public_id
    assert Execution.objects.count() == 4


@pytest.mark.django_db
def test_batch_holds_credits_per_item_or_refuses_all(client, tenant, agent):
    agent.credit_rules = {"base": 10}
    agent.save(update_fields=["credit_rules"])
    do_grant_credits(account_for(tenant.workspace, None), Decimal(25))
    response = post_batch(
        client, agent, tenant, {"items": batch_items(3)}, **{"X-API-Key": tenant.workspace_key.raw_key}
    )
    assert response.status_code == 402
    assert not Execution.objects.exists()
    assert (
        post_batch(
            client, agent, tenant, {"items": batch_items(2)}, **{"X-API-Key": tenant.workspace_key.raw_key}
        ).status_code
        == 200
    )
    assert account_for(tenant.workspace, None).balance == 5


@pytest.mark.django_db
def test_another_tenants_agent_is_404(client, other_tenant, agent):
    assert post_batch(client, agent, other_tenant, {"items": batch_items(1)}).status_code == 404
