"""Starting agent executions (spec/agents-execute.txt): one, or a batch of items, from inputs the
surface validated (api/agents/schemas.py).

Everything a start writes happens in one transaction: the Idempotency-Key claim, the credit hold
(402 rolls it all back: no execution, no key used) and the execution rows; the task messages
are published after commit.
"""

from django.db import transaction

from accounts.credits import account_for, do_hold_credits
from accounts.selectors import check_external_user
from agents.credit_rules import quote
from conversations.selectors import conversation_for_execution
from core.ids import uuid7
from executions import services
from executions.idempotency import claim_idempotency_key
from executions.models import Execution, ExecutionSource, IdempotencyKey


def hold_start_credits(*, workspace, principal, agent, inputs: dict, execution_id) -> dict:
    """Hold the estimate of a new execution of the agent (InsufficientCredits, a 402, when the
    balance cannot cover it); returns the execution's credit fields. Also for operators' reruns
    (executions/reruns.py)."""
    estimate = quote(agent.credit_rules, inputs)["total"]
    account = None
    if estimate > 0:
        account = account_for(workspace, principal)
        do_hold_credits(account, execution_id, estimate)
    return {"credit_account": account, "credits_held": estimate}


def _create(caller, agent, inputs: dict, source: str, **fields):
    """One execution of the agent's live version, with its credits held."""
    execution_id = uuid7()
    credits = hold_start_credits(
        workspace=caller.workspace, principal=caller.principal, agent=agent, inputs=inputs, execution_id=execution_id
    )
    return services.create_execution(
        id=execution_id,
        workspace=caller.workspace,
        principal=caller.principal,
        source=source,
        inputs=inputs,
        agent_version=agent.live_version,
        start_payload={"agent_id": f"agent:{agent.id}"},
        **credits,
        **fields,
    )


def _check_conversation(caller, agent, inputs: dict) -> None:
    """`conversation_scope`: the caller's active conversation with this agent (normalized id)."""
    if inputs.get("conversation_scope"):
        inputs["conversation_scope"] = conversation_for_execution(caller, agent, inputs["conversation_scope"]).public_id


def _start(caller, idempotency_key: str | None, fingerprint: str | None, create):
    """create() in the transaction that claims the Idempotency-Key (its row stays locked until the
    commit, so concurrent identical requests wait and exactly one creates)."""
    with transaction.atomic():
        claimed = (
            claim_idempotency_key(caller=caller, key=idempotency_key, fingerprint=fingerprint)
            if idempotency_key
            else None
        )
        execution = create()
        if claimed:
            IdempotencyKey.objects.filter(id=claimed.id).update(execution=execution)
    return execution


def start_agent_execution(
    *, caller, agent, inputs: dict, idempotency_key: str | None, fingerprint: str | None, source: str
) -> Execution:
    """One execution of the agent's live version with validated `inputs` (api/agents/schemas.py).
    `fingerprint` identifies the request an Idempotency-Key was sent with (request_fingerprint)."""

    check_external_user(caller.principal, inputs.get("external_user_id"))

    def create():
        _check_conversation(caller, agent, inputs)
        return _create(caller, agent, inputs, source, idempotency_key=idempotency_key or "")

    return _start(caller, idempotency_key, fingerprint, create)


def start_agent_batch(
    *, caller, agent, items: list[tuple[str, dict]], idempotency_key: str | None, fingerprint: str | None
) -> Execution:
    """The batch of validated `(key, inputs)` items is a parent execution waiting for its items; each
    item is a child execution that any worker of the fleet may run. The parent's events:
    batch_started, batch_progress per finished item, batch_completed."""

    for index, (_, inputs) in enumerate(items):  # before anything is written
        check_external_user(caller.principal, inputs.get("external_user_id"), f"items[{index}].external_user_id")

    def create():
        batch = services.create_batch(
            workspace=caller.workspace,
            principal=caller.principal,
            agent_version=agent.live_version,
            idempotency_key=idempotency_key or "",
        )
        for _, inputs in items:
            _check_conversation(caller, agent, inputs)
        children = [
            _create(caller, agent, inputs, ExecutionSource.BATCH_ITEM, parent=batch, batch_key=key)
            for key, inputs in items
        ]
        services.start_batch(batch, agent, children)
        return batch

    return _start(caller, idempotency_key, fingerprint, create)
