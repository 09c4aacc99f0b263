"""Cron expressions: checked when a schedule is saved, and the next due time after a moment.

cronsim (healthchecks.io's evaluator) rather than celery's crontab: it iterates the due times of an
expression in a time zone, DST included, from any start. Five fields only (minute to weekday; the
tick runs every SCHEDULE_TICK_SECONDS, so a seconds field would promise what it cannot keep), plus
the usual @-aliases.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_CRON_CHARS = 200


class InvalidCron(ValueError):
    """The expression or the time zone is not one a schedule can run on; `field` says which."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def expanded(expression: str) -> str:
    expression = " ".join(expression.split())
    return ALIASES.get(expression.lower(), expression)


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidCron("timezone", f"{name!r} is not an IANA time zone (for example UTC or Europe/Paris).")


def next_due(expression: str, timezone_name: str, after: datetime) -> datetime:
    """The first due time strictly after `after` (aware), in UTC."""
    zone = check_timezone(timezone_name)
    fields = expanded(expression)
    if len(expression) > MAX_CRON_CHARS or len(fields.split(" ")) != 5:
        raise InvalidCron("cron", "A cron expression has five fields: minute hour day-of-month month day-of-week.")
    try:
        return next(CronSim(fields, after.astimezone(zone).replace(microsecond=0))).astimezone(UTC)
    except (CronSimError, StopIteration) as exc:
        raise InvalidCron("cron", f"Not a valid cron expression: {exc or 'it never fires'}.")


def check_cron(expression: str, timezone_name: str, now: datetime) -> datetime:
    """Raise InvalidCron unless the expression fires in the zone; its next due time otherwise."""
    return next_due(expression, timezone_name, now)
