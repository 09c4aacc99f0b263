"""What a terminal transition does besides its row and event, wired in one place: the hook point
is executions/terminal.py, each effect gets the `TerminalOutcome`'s plain data."""

from accounts.credits import do_settle_credits
from conversations.services import record_exchange
from executions.models import ExecutionEvent, ExecutionState
from executions.sub_executions import child_finished
from executions.terminal import TerminalOutcome, register_terminal_effect


def settle_credits(outcome: TerminalOutcome) -> None:
    do_settle_credits(
        execution_id=outcome.execution_id,
        account_id=outcome.credit_account_id,
        held=outcome.credits_held,
        charge=outcome.charge,
    )


def record_in_conversation(outcome: TerminalOutcome) -> None:
    scope = outcome.inputs.get("conversation_scope")
    if not scope:
        return
    completed = outcome.state == ExecutionState.COMPLETED
    tool_results = (
        list(
            ExecutionEvent.objects.filter(execution_id=outcome.execution_id, type="tool_result")
            .order_by("seq")
            .values_list("data", flat=True)
        )
        if completed
        else []
    )
    record_exchange(
        workspace_id=outcome.workspace_id,
        execution_id=outcome.execution_id,
        conversation_scope=scope,
        state=outcome.state,
        message=outcome.inputs.get("message", ""),
        tool_results=tool_results,
        outputs=outcome.outputs,
        error=outcome.error,
    )


def wire_terminal_effects() -> None:
    for effect in (settle_credits, record_in_conversation, child_finished):
        register_terminal_effect(effect)
