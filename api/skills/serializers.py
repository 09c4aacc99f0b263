"""The skills API's execution object (spec/skills-start-standalone-execution.txt): bare UUIDs,
every documented field present (null when unknown)."""

from django.conf import settings
from django.core import signing

from core.timestamps import iso_utc
from executions.models import Execution

ARTIFACT_SALT = "executions.artifact"


def artifact_download_url(artifact) -> str:
    """Signed with the tenant and expiring; the download also needs a key of that tenant."""
    token = signing.dumps({"a": str(artifact.id), "t": str(artifact.execution.tenant_id)}, salt=ARTIFACT_SALT)
    return f"{settings.PUBLIC_BASE_URL}/v1/artifacts/{artifact.id}/download?token={token}"


def _id(value):
    return str(value) if value else None


def _summary(execution: Execution) -> dict:
    version = execution.skill_version
    return {
        "id": str(execution.id),
        "tenant_id": str(execution.tenant_id),
        "space_id": str(execution.workspace_id),
        "principal_id": _id(execution.principal_id),
        "skill_slug": version.skill.slug if version else None,
        "skill_version": version.number if version else None,
        "source": execution.source,
        "state": execution.state,
        "parent_execution_id": _id(execution.parent_id),
        "created_at": iso_utc(execution.created_at),
        "started_at": iso_utc(execution.started_at),
        "finished_at": iso_utc(execution.finished_at),
        "failure_reason": execution.failure_reason or None,
        "resource_usage": {
            "input_tokens": execution.input_tokens,
            "output_tokens": execution.output_tokens,
            "cost_usd": f"{execution.cost_usd:f}",
            "wallclock_ms": execution.wallclock_ms,
            "iteration_count": execution.iteration_count,
        },
    }


def skill_execution_data(execution: Execution) -> dict:
    children = execution.children.select_related("skill_version__skill").order_by("created_at")
    return {
        **_summary(execution),
        "inputs": execution.inputs,
        "outputs": execution.outputs,
        "error": execution.error,
        "artifacts": [
            {
                "artifact_id": str(artifact.id),
                "relpath_in_workspace": artifact.relpath_in_workspace,
                "document_type": artifact.document_type,
                "download_url": artifact_download_url(artifact),
                "size_bytes": artifact.size_bytes,
            }
            for artifact in execution.artifacts.select_related("execution")
        ],
        "sub_executions": [_summary(child) for child in children],
        "chat_thread_id": execution.chat_thread_id or None,
        "chat_message_id": execution.chat_message_id or None,
        "chat_tool_call_id": execution.chat_tool_call_id or None,
        "workspace_archive_id": _id(execution.workspace_archive_id),
        "langfuse_trace_id": execution.trace_id or None,
        "idempotency_key": execution.idempotency_key or None,
    }


def artifact_from_token(token: str) -> dict | None:
    try:
        return signing.loads(token, salt=ARTIFACT_SALT, max_age=settings.ARTIFACT_URL_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None
