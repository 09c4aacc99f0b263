"""Reads of the execution core, always scoped to what the caller may see."""

from accounts.models import ApiKeyKind
from core.errors import not_found
from core.ids import parse_prefixed_id
from executions.models import Execution


def readable_executions(caller):
    """Workspace keys read the workspace's executions; end-user keys read their own."""
    executions = Execution.objects.filter(workspace_id=caller.api_key.workspace_id)
    if caller.api_key.kind == ApiKeyKind.END_USER:
        executions = executions.filter(principal_id=caller.api_key.principal_id)
    return executions


def get_readable_execution(caller, execution_id: str) -> Execution:
    parsed = parse_prefixed_id(execution_id, "execution")
    execution = readable_executions(caller).filter(id=parsed).first() if parsed else None
    if execution is None:
        raise not_found("execution")
    return execution
