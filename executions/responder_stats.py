"""How an agent or a skill has been doing (its console page, issue 13 item 4): over the executions
that finished in the last 24 hours, the success rate (completed of completed + failed; a cancel is
nobody's failure) and the p50 / p95 run time (started to finished), computed in PostgreSQL
(percentile_cont) in one query. Batches are left out: a batch's run time is its items'."""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q
from django.utils import timezone

from executions.models import Execution, ExecutionSource, ExecutionState

WINDOW = timedelta(hours=24)


class PercentileCont(Aggregate):
    """PostgreSQL's `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), output_field=DurationField(), **extra)


@dataclass
class ResponderStats:
    finished: int
    completed: int
    failed: int
    cancelled: int
    p50: timedelta | None
    p95: timedelta | None

    @property
    def success_rate(self) -> float | None:
        decided = self.completed + self.failed
        return None if decided == 0 else self.completed / decided

    @property
    def success_percent(self) -> str:
        return "-" if self.success_rate is None else f"{self.success_rate * 100:.1f}%"


def responder_stats(executions, now=None) -> ResponderStats:
    """`executions`: the responder's (e.g. filtered by agent_version__agent)."""
    since = (now or timezone.now()) - WINDOW
    run_time = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    row = (
        executions.filter(finished_at__gte=since, started_at__isnull=False)
        .exclude(source=ExecutionSource.BATCH)
        .aggregate(
            finished=Count("id"),
            completed=Count("id", filter=Q(state=ExecutionState.COMPLETED)),
            failed=Count("id", filter=Q(state=ExecutionState.FAILED)),
            cancelled=Count("id", filter=Q(state=ExecutionState.CANCELLED)),
            p50=PercentileCont(run_time, 0.5),
            p95=PercentileCont(run_time, 0.95),
        )
    )
    return ResponderStats(**row)


def agent_executions(agent):
    return Execution.objects.filter(agent_version__agent_id=agent.id)


def skill_executions(skill):
    return Execution.objects.filter(skill_version__skill_id=skill.id)
