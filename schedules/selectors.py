"""Reads of schedules, scoped to the caller's workspace."""

from core.errors import not_found
from core.ids import parse_prefixed_id
from schedules.models import Schedule


def workspace_schedules(workspace):
    return Schedule.objects.filter(workspace=workspace).select_related("agent", "skill").order_by("created_at")


def get_schedule(workspace, schedule_id: str) -> Schedule:
    """The workspace's schedule; another workspace's (or no such id) is 404, as if absent."""
    parsed = parse_prefixed_id(schedule_id, "schedule")
    schedule = workspace_schedules(workspace).filter(id=parsed).first() if parsed else None
    if schedule is None:
        raise not_found("schedule")
    return schedule
