"""JSON renderings of an execution."""

from core.timestamps import iso_utc
from executions.models import Execution


def execution_data(execution: Execution) -> dict:
    """The execution as `GET /executions/{id}` shows it."""
    return {
        "id": execution.public_id,
        "state": execution.state,
        "source": execution.source,
        "attempt": execution.attempt,
        "cancel_requested": execution.cancel_requested,
        "parent_execution_id": f"execution:{execution.parent_id}" if execution.parent_id else None,
        "batch_key": execution.batch_key or None,
        "agent_version_id": str(execution.agent_version_id) if execution.agent_version_id else None,
        "skill_version_id": str(execution.skill_version_id) if execution.skill_version_id else None,
        "created_at": iso_utc(execution.created_at),
        "updated_at": iso_utc(execution.updated_at),
        "started_at": iso_utc(execution.started_at),
        "finished_at": iso_utc(execution.finished_at),
        "usage": {
            "input_tokens": execution.input_tokens,
            "output_tokens": execution.output_tokens,
            "total_tokens": execution.input_tokens + execution.output_tokens,
            "cost_usd": str(execution.cost_usd),
            "wallclock_ms": execution.wallclock_ms,
            "iteration_count": execution.iteration_count,
        },
        "inputs": execution.inputs,
        "outputs": execution.outputs,
        "error": execution.error,
        "failure_reason": execution.failure_reason or None,
        "credits": {"held": str(execution.credits_held), "charged": str(execution.credits)},
        "resume_deadline": iso_utc(execution.resume_deadline),
        "last_event_seq": execution.last_event_seq,
    }
