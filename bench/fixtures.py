"""The bench's tenant and agents, created in the current database (a new tenant each run).

Run as a script (`python bench/fixtures.py`, with DATABASE_URL set) it creates them in that
database and prints them as JSON: the history scenario uses it for its own databases.

Agents (all on the built-in model, which needs no network):
- noop: a one-word reply, no delay;
- noop_credits: the same with credit rules (a hold at the start, release + charge at the end), run
  with the key of a customer that has credits: the paid path;
- stream10: a 10-word reply, one word per `stream_delay_ms`;
- inflight: a 20-word reply, one word per 100 ms (~2 s of waiting on the "model");
- fanout: a `wait_event` node (event "go"), then a 20-word reply, one word per `fanout_delay_ms`.
"""

import json
import os
import sys
from decimal import Decimal
from pathlib import Path


def words(count: int) -> str:
    return " ".join(f"w{index}" for index in range(1, count + 1))


def _builtin(reply: str, delay_ms: int = 0) -> dict:
    return {"provider": "builtin", "reply": reply, "chunk_delay_ms": delay_ms}


def create(
    stream_delay_ms: int = 20, fanout_delay_ms: int = 250, inflight_chunks: int = 20, inflight_delay_ms: int = 100
) -> dict:
    from accounts.credits import account_for, do_grant_credits
    from accounts.models import ApiKeyKind, Customer
    from accounts.services import create_tenant, issue_api_key
    from agents.models import Agent
    from agents.services import publish_agent_version

    tenant = create_tenant(f"bench-{os.urandom(3).hex()}")
    workspace = tenant.workspace
    customer = Customer.objects.create(workspace=workspace, external_id="bench-customer")
    customer_key = issue_api_key(workspace, ApiKeyKind.END_USER, name="bench customer", customer=customer)
    account = account_for(workspace, customer_key.api_key.principal)
    do_grant_credits(account, Decimal(10**9))

    workflows = {
        "noop": [{"id": "n", "type": "ai", "model": _builtin("ok")}],
        "noop_credits": [{"id": "n", "type": "ai", "model": _builtin("ok")}],
        "stream10": [{"id": "n", "type": "ai", "model": _builtin(words(10), stream_delay_ms)}],
        "inflight": [{"id": "n", "type": "ai", "model": _builtin(words(inflight_chunks), inflight_delay_ms)}],
        "fanout": [
            {"id": "wait", "type": "wait_event", "event": "go"},
            {"id": "talk", "type": "ai", "model": _builtin(words(20), fanout_delay_ms)},
        ],
    }
    agents, versions = {}, {}
    for name, nodes in workflows.items():
        agent = Agent.objects.create(
            workspace=workspace, name=f"bench {name}", credit_rules={"base": 1} if name == "noop_credits" else {}
        )
        versions[name] = str(publish_agent_version(agent, {"nodes": nodes}).id)
        agents[name] = str(agent.id)
    return {
        "tenant_id": str(tenant.tenant.id),
        "workspace_id": str(workspace.id),
        "key": tenant.end_user_key.raw_key,
        "workspace_key": tenant.workspace_key.raw_key,
        "customer_key": customer_key.raw_key,
        "credit_account_id": str(account.id),
        "agents": agents,
        "agent_versions": versions,
    }


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(create(**json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})))
