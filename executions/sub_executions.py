"""Children of an execution: a workflow node's sub-execution, or the items of a batch.

A child's terminal transition calls `child_finished` (a terminal effect, executions/effects.py)
inside its own transaction. The parent's row is locked first (SELECT ... FOR UPDATE), so when two children finish at once the second sees the first
committed: exactly one of them completes a batch.
"""

from django.db.models import Count, Q

from executions.checkpoints import Checkpoint
from executions.events import append_event
from executions.models import TERMINAL_STATES, Execution, ExecutionSource, ExecutionState
from executions.services import do_complete_batch, do_resume_execution
from executions.terminal import TerminalOutcome


def child_finished(child: TerminalOutcome) -> None:
    """Resume the parent that waits for this child, or count a batch item; locks the parent's row."""
    if child.parent_id is None:
        return
    parent = Execution.objects.select_for_update().get(id=child.parent_id)
    if parent.state in TERMINAL_STATES:
        return
    if parent.source == ExecutionSource.BATCH:
        _batch_item_finished(parent, child)
        return
    if parent.state == ExecutionState.WAITING_FOR_SUB_EXECUTION and Checkpoint.from_json(
        parent.checkpoint
    ).waits_for_sub_execution(str(child.execution_id)):
        do_resume_execution(
            parent,
            ExecutionState.WAITING_FOR_SUB_EXECUTION,
            {
                "sub_execution_id": child.public_id,
                "status": child.state,
                "outputs": child.outputs,
                "error": child.error,
            },
        )


def _batch_item_finished(batch: Execution, item: TerminalOutcome) -> None:
    state, outputs, error = item.state, item.outputs, item.error
    counts = Execution.objects.filter(parent_id=batch.id).aggregate(
        total=Count("id"),
        finished=Count("id", filter=Q(state__in=TERMINAL_STATES)),
        succeeded=Count("id", filter=Q(state=ExecutionState.COMPLETED)),
    )
    progress = {
        "key": item.batch_key,
        "item_execution_id": item.public_id,
        "status": state,
        "completed": counts["finished"],
        "total": counts["total"],
    }
    if state == ExecutionState.COMPLETED:
        progress["output"] = {
            "text": (outputs or {}).get("text", ""),
            "parsed_output": (outputs or {}).get("parsed_output"),
        }
    else:
        progress["error"] = error
    append_event(batch, "batch_progress", progress)
    if counts["finished"] == counts["total"]:
        summary = {
            "total": counts["total"],
            "succeeded": counts["succeeded"],
            "failed": counts["total"] - counts["succeeded"],
        }
        do_complete_batch(batch, summary)
