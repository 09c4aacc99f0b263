"""The execution object of the Executions query API (spec/executions-api.txt), declared once, in
camelCase: rendered from an Execution row (`render(Execution, row)`), and from an
`api.query.selectors.Node` with its `children` (`render(ExecutionNesting, node)`).

`detail` is one of three variants told apart by `detail.type`: `agent` (also a batch's parent,
`source: batch`), `skill`, `batch_item`.
"""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, model_validator

from api.http.schemas import Schema
from api.query.selectors import Node
from executions import models
from executions.models import ExecutionSource, ExecutionState

STATUS_DESCRIPTION = (
    "The status of the execution: `queued` (waiting for a worker), `running`, `awaiting_client_tool` (waiting "
    "for a client tool's result), `awaiting_approval` (a human gate), `waiting_for_external_event`, "
    "`waiting_for_sub_execution` (waiting for a child execution or a batch's items), and the final ones "
    "`completed`, `failed`, `cancelled`."
)


class ExecutionUsage(Schema):
    inputTokens: int
    outputTokens: int
    totalTokens: int
    costUsd: float = Field(description="From the model alias's prices")
    wallclockMs: int | None
    iterationCount: int = Field(description="Model turns")


class _ExecutionDetailCommon(Schema):
    type: str
    source: ExecutionSource = Field(description="How the execution was started")
    inputs: Any = Field(description="null once purged")
    outputs: Any = Field(description="null until it completes, and once purged")
    error: Any = Field(description="`{code, message}` of a failed or cancelled execution; null once purged")
    failureReason: str | None
    usage: ExecutionUsage
    chatThreadId: str | None
    chatMessageId: str | None
    chatToolCallId: str | None


class ExecutionDetailAgent(_ExecutionDetailCommon):
    """An agent's execution (also a batch's parent execution, `source: batch`)."""

    type: Literal["agent"]
    agentId: uuid.UUID | None
    agentVersionId: uuid.UUID | None
    versionNumber: int | None


class ExecutionDetailSkill(_ExecutionDetailCommon):
    """A skill's execution: standalone, dispatched by a chat tool call, or a workflow's sub-execution."""

    type: Literal["skill"]
    skillId: uuid.UUID
    skillSlug: str
    skillVersionId: uuid.UUID
    versionNumber: int


class ExecutionDetailBatchItem(_ExecutionDetailCommon):
    """One item of an agent batch (POST /agents/{id}/execute/batch): a child of the batch execution."""

    type: Literal["batch_item"]
    agentId: uuid.UUID | None
    agentVersionId: uuid.UUID | None
    versionNumber: int | None
    batchId: uuid.UUID | None = Field(description="The batch execution (= parentId)")
    key: str = Field(description="The item's key in the batch request")


class ExecutionDetail(
    RootModel[
        Annotated[ExecutionDetailAgent | ExecutionDetailSkill | ExecutionDetailBatchItem, Field(discriminator="type")]
    ]
):
    """The execution detail containing type-specific information, told apart by `type`: `agent`,
    `skill` or `batch_item`."""


def _detail(execution: models.Execution) -> dict:
    purged = execution.is_purged
    common = {
        "source": execution.source,
        "inputs": None if purged else execution.inputs,
        "outputs": None if purged else execution.outputs,
        "error": None if purged else execution.error,
        "failureReason": execution.failure_reason or None,
        "usage": {
            "inputTokens": execution.input_tokens,
            "outputTokens": execution.output_tokens,
            "totalTokens": execution.input_tokens + execution.output_tokens,
            "costUsd": float(execution.cost_usd),
            "wallclockMs": execution.wallclock_ms,
            "iterationCount": execution.iteration_count,
        },
        "chatThreadId": execution.chat_thread_id or None,
        "chatMessageId": execution.chat_message_id or None,
        "chatToolCallId": execution.chat_tool_call_id or None,
    }
    if execution.skill_version_id:
        version = execution.skill_version
        return {
            "type": "skill",
            "skillId": version.skill_id,
            "skillSlug": version.skill.slug,
            "skillVersionId": version.id,
            "versionNumber": version.number,
            **common,
        }
    version = execution.agent_version
    agent = {
        "agentId": version.agent_id if version else None,
        "agentVersionId": version.id if version else None,
        "versionNumber": version.number if version else None,
    }
    if execution.source == ExecutionSource.BATCH_ITEM:
        return {"type": "batch_item", **agent, "batchId": execution.parent_id, "key": execution.batch_key, **common}
    return {"type": "agent", **agent, **common}


def _responder_id(execution: models.Execution) -> str:
    """The agent's or the skill's id ("" for a row with neither, which the API never creates)."""
    if execution.agent_version_id:
        return str(execution.agent_version.agent_id)
    if execution.skill_version_id:
        return str(execution.skill_version.skill_id)
    return ""


class Execution(Schema):
    createdAt: datetime
    id: uuid.UUID
    updatedAt: datetime
    creditsUsed: float = Field(description="The total number of credits used by this execution.")
    detail: ExecutionDetail
    endedAt: datetime | None = Field(description="When this execution ended.")
    isAgentic: bool = Field(description="Whether this execution is agentic (an agent's execution).")
    isPurged: bool = Field(description="Whether this execution has been purged.")
    parentId: uuid.UUID | None = Field(description="The parent execution ID of this execution.")
    responderId: str = Field(description="The responder ID of this execution: the agent's or the skill's id.")
    startedAt: datetime = Field(
        description="When this execution started (while it is still queued: when it was created)."
    )
    status: ExecutionState = Field(description=STATUS_DESCRIPTION)
    workspaceId: str = Field(description="The workspace ID of this execution.")

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, execution):
        if not isinstance(execution, models.Execution):
            return execution
        return cls.fields_of(execution)

    @staticmethod
    def fields_of(execution: models.Execution) -> dict:
        return {
            "createdAt": execution.created_at,
            "id": execution.id,
            "updatedAt": execution.updated_at,
            "creditsUsed": float(execution.credits),
            "detail": _detail(execution),
            "endedAt": execution.finished_at,
            "isAgentic": execution.agent_version_id is not None,
            "isPurged": execution.is_purged,
            "parentId": execution.parent_id,
            "responderId": _responder_id(execution),
            # documented as never null: a queued execution that has not started yet reports its creation
            "startedAt": execution.started_at or execution.created_at,
            "status": execution.state,
            "workspaceId": str(execution.workspace_id),
        }


class ExecutionNesting(Execution):
    children: list["ExecutionNesting"] = Field(
        description="Its child executions (sub-executions, batch items), oldest first, each with its own `children`."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, node):
        if not isinstance(node, Node):
            return node
        return {**cls.fields_of(node.execution), "children": node.children}
