"""Reads of the skills API: a space's skill executions, as the caller may read them (another space,
or another tenant's execution, is a 404)."""

from core.errors import not_found
from core.ids import parse_prefixed_id
from executions.selectors import readable_executions
from executions.skill_executions import caller_space


def skill_executions(caller, space_id: str, *, state: str | None = None, skill: str | None = None, source=None):
    """Newest first; `skill` is a slug."""
    caller_space(caller, space_id)
    executions = readable_executions(caller).filter(skill_version__isnull=False).select_related("skill_version__skill")
    filters = {"state": state, "source": source, "skill_version__skill__slug": skill}
    return executions.filter(**{lookup: value for lookup, value in filters.items() if value is not None}).order_by(
        "-created_at", "-id"
    )


def get_skill_execution(caller, space_id: str, execution_id: str):
    parsed = parse_prefixed_id(execution_id, "execution")
    execution = skill_executions(caller, space_id).filter(id=parsed).first() if parsed else None
    if execution is None:
        raise not_found("execution")
    return execution


def skill_execution_for_tool_call(caller, space_id: str, tool_call_id: str):
    """The execution a chat tool call dispatched (from the moment its row exists)."""
    execution = skill_executions(caller, space_id).filter(chat_tool_call_id=tool_call_id).first()
    if execution is None or not tool_call_id:
        raise not_found("execution")
    return execution
