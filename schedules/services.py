"""Schedules: created and deleted by a workspace (API, admin), fired by housekeeping's beat.

Beat runs `fire_due_schedules` every SCHEDULE_TICK_SECONDS (workers/tasks.py). Each due schedule is
claimed by one conditional UPDATE of its `next_run_at`, in the transaction that also creates its
execution, so a due time starts exactly one execution (see `_fire_due` for the race). A due time
missed while housekeeping was down fires once when it is back, then the schedule continues from
now: no burst of catch-up runs.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Principal, Workspace
from agents.models import Agent, Skill
from core.errors import ApiError
from executions.agent_executions import start_agent_execution
from executions.models import TERMINAL_STATES, Execution, ExecutionSource
from executions.skill_executions import start_skill_execution
from schedules.cron import InvalidCron, next_due
from schedules.models import Overlap, Schedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleCaller:
    """Who a scheduled execution runs as: what the start services read of an API key's caller."""

    workspace: Workspace
    principal: Principal | None


def check_schedule(*, cron: str, timezone_name: str, now: datetime | None = None) -> datetime:
    """400 `invalid_cron` / `invalid_timezone` (with the field) unless the expression fires in the
    zone; the first due time otherwise."""
    try:
        return next_due(cron, timezone_name, now or timezone.now())
    except InvalidCron as exc:
        raise ApiError(400, f"invalid_{exc.field}", str(exc), field=exc.field)


@transaction.atomic
def create_schedule(
    *,
    workspace: Workspace,
    principal: Principal | None,
    agent: Agent | None = None,
    skill: Skill | None = None,
    cron: str,
    timezone_name: str = "UTC",
    inputs: dict,
    overlap: str | None = None,
    enabled: bool = True,
    now: datetime | None = None,
) -> Schedule:
    """A schedule of the workspace's agent or skill (inputs already validated for it). At most
    SCHEDULE_MAX_PER_WORKSPACE per workspace: counted under the workspace row's lock, so two
    concurrent creates cannot both take the last place."""
    next_run_at = check_schedule(cron=cron, timezone_name=timezone_name, now=now)
    Workspace.objects.select_for_update().filter(id=workspace.id).first()
    if Schedule.objects.filter(workspace=workspace).count() >= settings.SCHEDULE_MAX_PER_WORKSPACE:
        raise ApiError(
            409, "too_many_schedules", f"A workspace has at most {settings.SCHEDULE_MAX_PER_WORKSPACE} schedules."
        )
    return Schedule.objects.create(
        workspace=workspace,
        principal=principal,
        agent=agent,
        skill=skill,
        cron=cron,
        timezone=timezone_name,
        inputs=inputs,
        overlap=overlap or settings.SCHEDULE_OVERLAP_DEFAULT,
        enabled=enabled,
        next_run_at=next_run_at,
    )


def delete_schedule(*, schedule: Schedule) -> None:
    """Its executions stay (they are the workspace's record); no further run starts."""
    schedule.delete()


def do_retime_schedule(*, schedule: Schedule, now: datetime | None = None) -> None:
    """After its expression or zone changed (the admin): the next due time from now."""
    schedule.next_run_at = check_schedule(cron=schedule.cron, timezone_name=schedule.timezone, now=now)


# --- the tick ---------------------------------------------------------------------------------------


def fire_due_schedules(*, now: datetime | None = None) -> dict:
    """One tick: first the queued runs whose previous execution ended, then every schedule due at
    `now` (the clock is a parameter so that tests control it). Returns the outcome per schedule id."""
    now = now or timezone.now()
    outcomes = {}
    waiting = Schedule.objects.filter(enabled=True, queued_runs__gt=0).order_by("next_run_at")
    for schedule_id in waiting.values_list("id", flat=True)[: settings.SCHEDULE_TICK_BATCH]:
        outcome = _start_queued(schedule_id)
        if outcome:
            outcomes[str(schedule_id)] = outcome
    due = Schedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at")
    for schedule_id, due_at in due.values_list("id", "next_run_at")[: settings.SCHEDULE_TICK_BATCH]:
        outcome = _fire_due(schedule_id, due_at, now)
        if outcome:
            outcomes[str(schedule_id)] = outcome
    return outcomes


def _fire_due(schedule_id, due_at: datetime, now: datetime) -> str | None:
    """Claim the due time `due_at` of the schedule, then start, queue or skip its run.

    The race: two ticks read the same due row (a second housekeeping started by mistake, a tick
    run again after a restart, a slow tick overlapping the next). Each then tries
    `UPDATE ... SET next_run_at = <next> WHERE id = ... AND next_run_at = <due_at>`: the first holds
    the row lock until it commits; PostgreSQL then re-checks the other's WHERE against the committed
    row, finds next_run_at moved, and updates nothing, so that tick starts nothing. The execution
    rows are written in the claim's transaction: a crash between the claim and the start rolls
    both back (the next tick fires the time again) rather than losing or doubling the run."""
    with transaction.atomic():
        schedule = Schedule.objects.filter(id=schedule_id).select_related("last_execution").first()
        if schedule is None:
            return None
        try:
            next_run_at = next_due(schedule.cron, schedule.timezone, now)
        except InvalidCron as exc:  # the zone database no longer knows its zone: stop it, say why
            Schedule.objects.filter(id=schedule_id).update(enabled=False, last_error=_error("invalid_cron", str(exc)))
            return "disabled"
        claimed = Schedule.objects.filter(id=schedule_id, next_run_at=due_at, enabled=True).update(
            next_run_at=next_run_at, last_run_at=due_at
        )
        if not claimed:
            return None
        schedule.refresh_from_db(fields=["queued_runs", "last_execution"])  # under the row lock now
        if _previous_active(schedule):
            return _overlapping(schedule)
        return _start(schedule)


def _start_queued(schedule_id) -> str | None:
    """A queued run starts once the schedule's previous execution ended (locked: one tick does it)."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(of=("self",))
            .select_related("last_execution")
            .filter(id=schedule_id, enabled=True, queued_runs__gt=0)
            .first()
        )
        if schedule is None or _previous_active(schedule):
            return None
        Schedule.objects.filter(id=schedule_id).update(queued_runs=F("queued_runs") - 1)
        return _start(schedule)


def _previous_active(schedule: Schedule) -> bool:
    previous = schedule.last_execution
    return previous is not None and previous.state not in TERMINAL_STATES


def _overlapping(schedule: Schedule) -> str:
    """overlap=skip drops the due run; queue keeps it for later, up to SCHEDULE_MAX_QUEUED_RUNS."""
    rows = Schedule.objects.filter(id=schedule.id)
    if schedule.overlap == Overlap.QUEUE and schedule.queued_runs < settings.SCHEDULE_MAX_QUEUED_RUNS:
        rows.update(queued_runs=F("queued_runs") + 1)
        return "queued"
    fields = {}
    if schedule.overlap == Overlap.QUEUE:
        fields["last_error"] = _error(
            "queue_full", f"{settings.SCHEDULE_MAX_QUEUED_RUNS} runs already wait for the previous one."
        )
    rows.update(skipped_runs=F("skipped_runs") + 1, **fields)
    return "skipped"


def _start(schedule: Schedule) -> str:
    """The run's execution (source `schedule`), through the start services an API request uses;
    a start they refuse (no credits, unpublished, inputs no longer valid) is recorded on the
    schedule, the due time stays handled."""
    caller = ScheduleCaller(workspace=schedule.workspace, principal=schedule.principal)
    try:
        with transaction.atomic():  # a savepoint: a refused start keeps the claim
            execution = _start_execution(schedule, caller)
    except ApiError as exc:
        logger.warning("schedule %s did not start: %s %s", schedule.id, exc.code, exc.message)
        Schedule.objects.filter(id=schedule.id).update(last_error=_error(exc.code, exc.message))
        return "failed"
    Schedule.objects.filter(id=schedule.id).update(last_execution=execution, last_error=None)
    return "started"


def _start_execution(schedule: Schedule, caller: ScheduleCaller) -> Execution:
    if schedule.agent_id:
        agent = Agent.objects.select_related("live_version").get(id=schedule.agent_id)
        if agent.live_version is None:
            raise ApiError(409, "agent_not_published", "The agent has no published version.")
        return start_agent_execution(
            caller=caller,
            agent=agent,
            inputs=dict(schedule.inputs),
            idempotency_key=None,
            fingerprint=None,
            source=ExecutionSource.SCHEDULE,
        )
    skill = Skill.objects.select_related("live_version").get(id=schedule.skill_id)
    if skill.live_version is None:
        raise ApiError(409, "skill_not_published", "The skill has no published version.")
    return start_skill_execution(
        caller=caller,
        space=schedule.workspace,
        skill=skill,
        inputs=dict(schedule.inputs),
        file_source_ids=[],
        source=ExecutionSource.SCHEDULE,
    )


def _error(code: str, message: str) -> dict:
    return {"code": code, "message": message, "at": timezone.now().isoformat()}
