"""The figures of the console's dashboard (the admin index, issue 13 item 5), in total and per
workspace: executions per state now, the last hour's throughput, failures by reason (24 h), the
queue's depth and its oldest execution, the credits spent today (UTC).

Each figure is one grouped query over all workspaces (six in all, whatever their number).
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from decimal import Decimal

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from accounts.models import CreditEntry, CreditEntryKind, Workspace
from executions.models import Execution, ExecutionState

FAILURES_WINDOW = timedelta(hours=24)


@dataclass
class Figures:
    """One workspace's figures, or the total's."""

    states: dict = field(default_factory=dict)  # state -> count
    started_last_hour: int = 0
    finished_last_hour: dict = field(default_factory=dict)  # terminal state -> count
    failures: dict = field(default_factory=dict)  # failure reason -> count (24 h)
    queue_depth: int = 0
    oldest_queued_at: object = None
    credits_today: Decimal = Decimal(0)

    @property
    def credits_today_text(self) -> str:
        return f"{self.credits_today.normalize():f}"

    @property
    def finished_last_hour_total(self) -> int:
        return sum(self.finished_last_hour.values())

    @property
    def failures_sorted(self) -> list[tuple[str, int]]:
        return sorted(self.failures.items(), key=lambda item: (-item[1], item[0]))

    @property
    def states_sorted(self) -> list[tuple[str, int]]:
        return [(state, self.states[state]) for state in ExecutionState.values if self.states.get(state)]

    @property
    def oldest_queued_for(self) -> timedelta | None:
        return None if self.oldest_queued_at is None else timezone.now() - self.oldest_queued_at


@dataclass
class Dashboard:
    total: Figures
    workspaces: list[tuple[Workspace, Figures]]


def dashboard(now=None) -> Dashboard:
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    per_workspace: dict = defaultdict(Figures)
    total = Figures()

    for row in Execution.objects.order_by().values("workspace_id", "state").annotate(n=Count("id")):
        per_workspace[row["workspace_id"]].states[row["state"]] = row["n"]
        total.states[row["state"]] = total.states.get(row["state"], 0) + row["n"]
    queued = (
        Execution.objects.filter(state=ExecutionState.QUEUED)
        .order_by()
        .values("workspace_id")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    )
    for row in queued:
        figures = per_workspace[row["workspace_id"]]
        figures.queue_depth, figures.oldest_queued_at = row["n"], row["oldest"]
        total.queue_depth += row["n"]
        if total.oldest_queued_at is None or row["oldest"] < total.oldest_queued_at:
            total.oldest_queued_at = row["oldest"]
    started = (
        Execution.objects.filter(created_at__gte=hour_ago).order_by().values("workspace_id").annotate(n=Count("id"))
    )
    for row in started:
        per_workspace[row["workspace_id"]].started_last_hour = row["n"]
        total.started_last_hour += row["n"]
    finished = (
        Execution.objects.filter(finished_at__gte=hour_ago)
        .order_by()
        .values("workspace_id", "state")
        .annotate(n=Count("id"))
    )
    for row in finished:
        per_workspace[row["workspace_id"]].finished_last_hour[row["state"]] = row["n"]
        total.finished_last_hour[row["state"]] = total.finished_last_hour.get(row["state"], 0) + row["n"]
    failures = (
        Execution.objects.filter(Q(state=ExecutionState.FAILED) & Q(finished_at__gte=now - FAILURES_WINDOW))
        .order_by()
        .values("workspace_id", "failure_reason")
        .annotate(n=Count("id"))
    )
    for row in failures:
        reason = row["failure_reason"] or "(none)"
        per_workspace[row["workspace_id"]].failures[reason] = row["n"]
        total.failures[reason] = total.failures.get(reason, 0) + row["n"]
    # spent: what was charged today less what an operator refunded today (a refund is a credit)
    charges = (
        CreditEntry.objects.filter(kind__in=[CreditEntryKind.CHARGE, CreditEntryKind.REFUND], created_at__gte=today)
        .order_by()
        .values("account__workspace_id")
        .annotate(amount=Sum("amount"))
    )
    for row in charges:
        spent = -row["amount"]  # charges are debits, refunds credits
        per_workspace[row["account__workspace_id"]].credits_today = spent
        total.credits_today += spent

    workspaces = Workspace.objects.filter(id__in=list(per_workspace)).select_related("tenant").order_by("name")
    return Dashboard(total=total, workspaces=[(workspace, per_workspace[workspace.id]) for workspace in workspaces])
