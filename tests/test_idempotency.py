"""Idempotency-Key on the execute endpoints: 409 within 24 h, 422 on a different body, exactly once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone

from executions.models import Execution, IdempotencyKey
from tests.helpers import auth, execute

pytestmark = pytest.mark.django_db


def post(client, agent, tenant, key, body=None, route="execute/stream"):
    return execute(client, agent, tenant, route=route, body=body or None, headers={"Idempotency-Key": key})


def test_same_key_within_24h_is_409_naming_the_original(client, tenant, agent):
    first = post(client, agent, tenant, "key-1")
    assert first.status_code == 200
    original = Execution.objects.get()
    second = post(client, agent, tenant, "key-1")
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["execution_id"] == f"execution:{original.id}"
    assert Execution.objects.count() == 1
    assert original.idempotency_key == "key-1"


def test_same_key_with_a_different_body_is_422(client, tenant, agent):
    assert post(client, agent, tenant, "key-2").status_code == 200
    response = post(client, agent, tenant, "key-2", body={"message": "something else"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_mismatch"
    other_route = post(client, agent, tenant, "key-2", route="execute")
    assert other_route.status_code == 422
    assert Execution.objects.count() == 1


def test_after_24h_the_key_is_processed_normally(client, tenant, agent):
    assert post(client, agent, tenant, "key-3").status_code == 200
    IdempotencyKey.objects.update(
        expires_at=timezone.now() - timedelta(seconds=1), created_at=timezone.now() - timedelta(hours=24, seconds=1)
    )
    assert post(client, agent, tenant, "key-3").status_code == 200
    assert Execution.objects.count() == 2
    record = IdempotencyKey.objects.get()
    assert record.execution_id == Execution.objects.order_by("-created_at").first().id
    assert post(client, agent, tenant, "key-3").status_code == 409


def test_keys_are_per_workspace(client, tenant, other_tenant, agent, make_agent):
    other_agent = make_agent(other_tenant.workspace)
    assert post(client, agent, tenant, "shared-key").status_code == 200
    assert post(client, other_agent, other_tenant, "shared-key").status_code == 200
    assert Execution.objects.count() == 2


@pytest.mark.parametrize("bad", ["", " ", "x" * 256, "caf\u00e9"])
def test_malformed_keys_are_400(client, tenant, agent, bad):
    response = client.post(
        f"/agents/{agent.id}/execute",
        data={"message": "hi"},
        content_type="application/json",
        headers={**auth(tenant), "Idempotency-Key": bad.encode("utf-8").decode("latin-1")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_key_of_255_characters_is_accepted(client, tenant, agent):
    assert post(client, agent, tenant, "k" * 255).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_requests_make_one_execution(live, tenant, make_agent):
    agent = make_agent(tenant.workspace, reply="done")
    headers = {**auth(tenant), "Idempotency-Key": "burst"}

    def send(_):
        return execute(live, agent, headers=headers)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(send, range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 49
    execution = Execution.objects.get()
    assert all(
        r.json()["error"]["execution_id"] == f"execution:{execution.id}" for r in responses if r.status_code == 409
    )
    assert next(r for r in responses if r.status_code == 200).json()["data"]["status"] == "completed"
