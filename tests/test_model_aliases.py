"""Agent nodes name workspace model aliases; every model call is priced from its model's prices."""

from decimal import Decimal

import pytest

from accounts.models import ModelAlias
from executions.models import Execution, ExecutionEvent
from tests.factories import AgentFactory
from tests.helpers import execute
from workers.runtime import run_execution

pytestmark = pytest.mark.django_db


def start(client, tenant, nodes):
    agent = AgentFactory(workspace=tenant.workspace, name="priced", workflow={"nodes": nodes})
    response = execute(client, agent, tenant, route="execute/stream")
    assert response.status_code == 200
    return Execution.objects.get()


def test_an_alias_named_by_a_node_runs_and_prices_each_call(client, tenant):
    ModelAlias.objects.create(
        workspace=tenant.workspace,
        alias="fast",
        provider="builtin",
        options={"reply": "one two three four"},
        input_usd_per_million_tokens="2.5",
        output_usd_per_million_tokens="10",
    )
    execution = start(
        client,
        tenant,
        [
            {"id": "a", "type": "ai", "model": {"alias": "fast"}},
            {
                "id": "b",
                "type": "ai",
                "model": {
                    "provider": "builtin",
                    "reply": "five six",
                    "input_usd_per_million_tokens": 1,
                    "output_usd_per_million_tokens": 1,
                },
            },
        ],
    )
    assert run_execution(execution.id) == "completed"
    execution.refresh_from_db()
    # node a: 1 input token ("hi"), 4 output; node b: 1 input, 2 output
    expected = (Decimal("2.5") * 1 + Decimal(10) * 4 + Decimal(1) * 1 + Decimal(1) * 2) / 1_000_000
    assert expected == Decimal("0.0000455")  # rounded once, half up, to the micro-dollar
    assert execution.cost_usd == Decimal("0.000046")
    final = ExecutionEvent.objects.get(execution=execution, type="final").data
    assert final["cost_microdollars"] == 46
    assert final["output"]["text"] == "five six"


def test_an_unknown_alias_fails_the_execution(client, tenant):
    execution = start(client, tenant, [{"id": "a", "type": "ai", "model": {"alias": "missing"}}])
    assert run_execution(execution.id) == "failed"
    execution.refresh_from_db()
    assert execution.failure_reason == "invalid_workflow"
