"""The skills API's execution object (spec/skills-start-standalone-execution.txt), declared once:
bare UUIDs, every documented field present (null when unknown). Rendered from an Execution row
(`render(SkillExecution, execution)`)."""

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core import signing
from pydantic import Field, model_validator

from api.http.schemas import Schema
from executions.models import Execution, ExecutionSource, ExecutionState

ARTIFACT_SALT = "executions.artifact"


def artifact_download_url(artifact) -> str:
    """Signed with the tenant and expiring; the download also needs a key of that tenant."""
    token = signing.dumps({"a": str(artifact.id), "t": str(artifact.execution.tenant_id)}, salt=ARTIFACT_SALT)
    return f"{settings.PUBLIC_BASE_URL}/v1/artifacts/{artifact.id}/download?token={token}"


def artifact_from_token(token: str) -> dict | None:
    try:
        return signing.loads(token, salt=ARTIFACT_SALT, max_age=settings.ARTIFACT_URL_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None


class SkillResourceUsage(Schema):
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description="A decimal string, in US dollars")
    wallclock_ms: int | None
    iteration_count: int


class SkillArtifact(Schema):
    artifact_id: uuid.UUID
    relpath_in_workspace: str
    document_type: str
    download_url: str = Field(description="Signed and expiring (ARTIFACT_URL_MAX_AGE_SECONDS); needs a key too")
    size_bytes: int | None


class SkillExecutionSummary(Schema):
    """An execution without its payloads (a sub-execution of a skill execution)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    space_id: uuid.UUID
    principal_id: uuid.UUID | None
    skill_slug: str | None
    skill_version: int | None
    source: ExecutionSource
    state: ExecutionState
    parent_execution_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    failure_reason: str | None
    resource_usage: SkillResourceUsage

    @model_validator(mode="before")
    @classmethod
    def _from_execution(cls, execution):
        if not isinstance(execution, Execution):
            return execution
        return cls.fields_of(execution)

    @staticmethod
    def fields_of(execution: Execution) -> dict:
        version = execution.skill_version
        return {
            "id": execution.id,
            "tenant_id": execution.tenant_id,
            "space_id": execution.workspace_id,
            "principal_id": execution.principal_id,
            "skill_slug": version.skill.slug if version else None,
            "skill_version": version.number if version else None,
            "source": execution.source,
            "state": execution.state,
            "parent_execution_id": execution.parent_id,
            "created_at": execution.created_at,
            "started_at": execution.started_at,
            "finished_at": execution.finished_at,
            "failure_reason": execution.failure_reason or None,
            "resource_usage": {
                "input_tokens": execution.input_tokens,
                "output_tokens": execution.output_tokens,
                "cost_usd": f"{execution.cost_usd:f}",
                "wallclock_ms": execution.wallclock_ms,
                "iteration_count": execution.iteration_count,
            },
        }


class SkillExecution(SkillExecutionSummary):
    """The execution object of every skills API answer."""

    inputs: Any
    outputs: Any = Field(description="null until it completes")
    error: Any = Field(description="`{code, message}` of a failed or cancelled execution")
    artifacts: list[SkillArtifact]
    sub_executions: list[SkillExecutionSummary] = Field(description="Oldest first")
    chat_thread_id: str | None
    chat_message_id: str | None
    chat_tool_call_id: str | None
    workspace_archive_id: uuid.UUID | None
    langfuse_trace_id: str | None
    idempotency_key: str | None

    @model_validator(mode="before")
    @classmethod
    def _from_execution(cls, execution):
        if not isinstance(execution, Execution):
            return execution
        children = execution.children.select_related("skill_version__skill").order_by("created_at")
        return {
            **cls.fields_of(execution),
            "inputs": execution.inputs,
            "outputs": execution.outputs,
            "error": execution.error,
            "artifacts": [
                {
                    "artifact_id": artifact.id,
                    "relpath_in_workspace": artifact.relpath_in_workspace,
                    "document_type": artifact.document_type,
                    "download_url": artifact_download_url(artifact),
                    "size_bytes": artifact.size_bytes,
                }
                for artifact in execution.artifacts.select_related("execution")
            ],
            "sub_executions": list(children),
            "chat_thread_id": execution.chat_thread_id or None,
            "chat_message_id": execution.chat_message_id or None,
            "chat_tool_call_id": execution.chat_tool_call_id or None,
            "workspace_archive_id": execution.workspace_archive_id,
            "langfuse_trace_id": execution.trace_id or None,
            "idempotency_key": execution.idempotency_key or None,
        }
