"""What a suspended execution waits for, posted by a client: client tool results, a human gate's
decision, an external event. Each `check_*` locks the row (SELECT ... FOR UPDATE, held until its
transaction commits), checks the state and what the waiting node expects (its checkpoint), and
resumes the execution (re-queued once the transaction commits); each returns the seq of the
`resumed` event, where a stream of the resumed run starts."""

from django.db import transaction

from core.errors import ApiError
from executions.checkpoints import Checkpoint
from executions.models import Execution, ExecutionState
from executions.services import do_resume_execution


def check_waiting(execution, expected_state: str, action: str) -> Execution:
    """Lock the execution's row for the caller's transaction and check it is in `expected_state` (409)."""
    row = Execution.objects.select_for_update().get(id=execution.id)
    if row.state != expected_state:
        raise ApiError(
            409,
            f"execution_not_{expected_state}",
            f"The execution is {row.state}, not {expected_state}: nothing to {action}.",
            state=row.state,
        )
    return row


@transaction.atomic
def check_submit_tool_result(
    execution, tool_call_id: str, outcome: str, result, *, by: str | None = None
) -> tuple[int, list]:
    """Store one client tool's result; the last pending one resumes the execution. Holds the row's
    lock (check_waiting) until commit, so two results posted at once are counted one after the other.

    Returns the `resumed` event's seq (0 while calls are pending) and the calls still pending."""
    row = check_waiting(execution, ExecutionState.AWAITING_CLIENT_TOOL, "post a tool result for")
    pending = Checkpoint.from_json(row.checkpoint).pending_tool_call_ids()
    if tool_call_id not in pending:
        raise ApiError(
            404,
            "tool_call_not_found",
            f"The execution has no pending tool call {tool_call_id!r}.",
            field="tool_call_id",
        )
    results = dict((row.resume_input or {}).get("tool_results", {}))
    if tool_call_id in results:
        raise ApiError(
            409,
            "tool_result_already_submitted",
            f"A result for {tool_call_id!r} was already posted.",
            field="tool_call_id",
        )
    results[tool_call_id] = {"outcome": outcome, "result": result}
    remaining = [call_id for call_id in pending if call_id not in results]
    if remaining:
        Execution.objects.filter(id=row.id).update(resume_input={"tool_results": results})
        return 0, remaining
    return do_resume_execution(row, ExecutionState.AWAITING_CLIENT_TOOL, {"tool_results": results}, by=by), remaining


@transaction.atomic
def check_decide_approval(execution, decision: str, comment: str, principal, *, by: str | None = None) -> int:
    """Holds the row's lock (check_waiting) until commit. `by`: an operator deciding in the admin
    (`admin:<username>`) instead of an API caller."""
    row = check_waiting(execution, ExecutionState.AWAITING_APPROVAL, "approve or reject")
    return do_resume_execution(
        row,
        ExecutionState.AWAITING_APPROVAL,
        {
            "decision": decision,
            "comment": comment,
            "decided_by": by or "api",
            "principal_id": str(principal.id) if principal else None,
        },
        by=by,
    )


@transaction.atomic
def check_post_external_event(execution, event: str, payload, *, by: str | None = None) -> int:
    """Holds the row's lock (check_waiting) until commit; the event must be the one waited for (422)."""
    row = check_waiting(execution, ExecutionState.WAITING_FOR_EXTERNAL_EVENT, "deliver an event to")
    checkpoint = Checkpoint.from_json(row.checkpoint)
    if checkpoint.media_request_id():  # only the provider's signed webhook resumes a media wait
        raise ApiError(
            409,
            "execution_waits_for_media",
            "The execution waits for its media provider's result, not for a posted event.",
        )
    expected = checkpoint.expected_event()
    if expected and event != expected:
        raise ApiError(
            422,
            "unexpected_event",
            f"The execution waits for the event {expected!r}, not {event!r}.",
            field="event",
            expected=expected,
        )
    return do_resume_execution(
        row, ExecutionState.WAITING_FOR_EXTERNAL_EVENT, {"event": event, "payload": payload}, by=by
    )
