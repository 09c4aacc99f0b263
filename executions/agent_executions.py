"""Starting agent executions (spec/agents-execute.txt): one, or a batch of items.

Everything a start writes happens in one transaction: the Idempotency-Key claim, the credit hold
(402 rolls it all back: no execution, no key used) and the execution rows; the task messages
are published after commit.
"""

from django.conf import settings
from django.db import transaction

from accounts.credits import account_for, do_hold_credits
from agents.credit_rules import quote
from agents.selectors import get_live_agent
from api.agents.schemas import parse_batch_items, parse_execute_inputs, parse_json_object
from conversations.selectors import conversation_for_execution
from core.ids import uuid7
from executions import services
from executions.idempotency import claim_idempotency_key, parse_idempotency_key, request_fingerprint
from executions.models import ExecutionSource, IdempotencyKey


def _create(caller, agent, inputs: dict, source: str, **fields):
    """One execution of the agent's live version, with its credits held."""
    execution_id = uuid7()
    estimate = quote(agent.credit_rules, inputs)["total"]
    account = None
    if estimate > 0:
        account = account_for(caller.workspace, caller.principal)
        do_hold_credits(account, execution_id, estimate)
    return services.create_execution(
        id=execution_id,
        workspace=caller.workspace,
        principal=caller.principal,
        source=source,
        inputs=inputs,
        agent_version=agent.live_version,
        start_payload={"agent_id": f"agent:{agent.id}"},
        credit_account=account,
        credits_held=estimate,
        **fields,
    )


def _check_conversation(caller, agent, inputs: dict) -> None:
    """`conversation_scope`: the caller's active conversation with this agent (normalized id)."""
    if inputs.get("conversation_scope"):
        inputs["conversation_scope"] = conversation_for_execution(caller, agent, inputs["conversation_scope"]).public_id


def _start(caller, agent_id: str, request, route: str, create):
    agent = get_live_agent(caller.workspace, agent_id)
    idempotency_key = parse_idempotency_key(request.headers)
    body = parse_json_object(request.body)
    with transaction.atomic():
        claimed = None
        if idempotency_key:
            claimed = claim_idempotency_key(
                caller.workspace, idempotency_key, request_fingerprint(f"{route} {agent.id}", body)
            )
        execution = create(agent, body, idempotency_key or "")
        if claimed:
            IdempotencyKey.objects.filter(id=claimed.id).update(execution=execution)
    return execution


def start_agent_execution(caller, agent_id: str, request, source: str, route: str):
    def create(agent, body, idempotency_key):
        inputs = parse_execute_inputs(body, agent, caller.workspace)
        _check_conversation(caller, agent, inputs)
        return _create(caller, agent, inputs, source, idempotency_key=idempotency_key)

    return _start(caller, agent_id, request, route, create)


def start_agent_batch(caller, agent_id: str, request):
    """The batch is a parent execution waiting for its items; each item is a child execution that any
    worker of the fleet may run. The parent's events: batch_started, batch_progress per finished
    item, batch_completed."""

    def create(agent, body, idempotency_key):
        items = parse_batch_items(body, agent, caller.workspace, settings.BATCH_MAX_ITEMS)
        batch = services.create_batch(
            workspace=caller.workspace,
            principal=caller.principal,
            agent_version=agent.live_version,
            idempotency_key=idempotency_key,
        )
        for _, inputs in items:
            _check_conversation(caller, agent, inputs)
        children = [
            _create(caller, agent, inputs, ExecutionSource.BATCH_ITEM, parent=batch, batch_key=key)
            for key, inputs in items
        ]
        services.start_batch(batch, agent, children)
        return batch

    return _start(caller, agent_id, request, "execute/batch", create)
