"""The agents API's rendering of an execution (GET /executions/{id}, its cancel)."""

from typing import Any

from pydantic import Field

from api.http.schemas import Schema
from core.timestamps import iso_utc
from executions.models import Execution

TIMESTAMP = {"format": "date-time"}


class ExecutionDataUsage(Schema):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: str = Field(description="A decimal, as a string")
    wallclock_ms: int | None
    iteration_count: int


class ExecutionDataCredits(Schema):
    held: str = Field(description="A decimal, as a string")
    charged: str = Field(description="A decimal, as a string")


class ExecutionData(Schema):
    """An execution as `GET /executions/{id}` shows it."""

    id: str = Field(examples=["execution:0f8c..."])
    state: str
    source: str
    attempt: int
    cancel_requested: bool
    parent_execution_id: str | None
    batch_key: str | None
    agent_version_id: str | None
    skill_version_id: str | None
    created_at: str = Field(json_schema_extra=TIMESTAMP)
    updated_at: str = Field(json_schema_extra=TIMESTAMP)
    started_at: str | None = Field(json_schema_extra=TIMESTAMP)
    finished_at: str | None = Field(json_schema_extra=TIMESTAMP)
    usage: ExecutionDataUsage
    inputs: dict
    outputs: Any = Field(description="What the execution produced; null until it completes")
    error: dict | None = Field(description="`code` and `message` of a failed or cancelled execution")
    failure_reason: str | None
    credits: ExecutionDataCredits
    resume_deadline: str | None = Field(json_schema_extra=TIMESTAMP)
    last_event_seq: int

    @staticmethod
    def fields(execution: Execution) -> dict:
        """The schema's fields of an execution row, for `render`."""
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
            "usage": {**execution.usage(), "iteration_count": execution.iteration_count},
            "inputs": execution.inputs,
            "outputs": execution.outputs,
            "error": execution.error,
            "failure_reason": execution.failure_reason or None,
            "credits": {"held": str(execution.credits_held), "charged": str(execution.credits)},
            "resume_deadline": iso_utc(execution.resume_deadline),
            "last_event_seq": execution.last_event_seq,
        }
