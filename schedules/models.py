"""A workspace's schedule: an agent or a skill started on a cron expression with fixed inputs."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from accounts.models import Principal, Tenant, Workspace
from agents.models import Agent, Skill
from core.ids import uuid7
from executions.models import Execution
from schedules.cron import InvalidCron, check_cron


class Overlap(models.TextChoices):
    """A due run while the schedule's previous execution has not ended (a suspended one included)."""

    SKIP = "skip", "skip: the due run is dropped"
    QUEUE = "queue", "queue: it starts when the previous one ends"


def default_overlap() -> str:
    return settings.SCHEDULE_OVERLAP_DEFAULT


class Schedule(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="schedules")
    # The executions run as this principal (the key's that created it); empty: as the workspace.
    principal = models.ForeignKey(Principal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="schedules")
    skill = models.ForeignKey(Skill, null=True, blank=True, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(
        max_length=200, help_text="Five fields (minute hour day-of-month month weekday) or @daily..."
    )
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA zone the expression is read in")
    inputs = models.JSONField(
        default=dict, blank=True, help_text="An agent's execute body (message, variables...), or a skill's inputs"
    )
    overlap = models.CharField(max_length=8, choices=Overlap.choices, default=default_overlap)
    enabled = models.BooleanField(default=True)
    # The tick claims a due schedule by moving next_run_at with a conditional UPDATE (services.py).
    next_run_at = models.DateTimeField(db_index=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="The last due time handled")
    last_execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    # Due runs waiting for the previous execution to end (overlap=queue), at most SCHEDULE_MAX_QUEUED_RUNS.
    queued_runs = models.PositiveIntegerField(default=0, editable=False)
    skipped_runs = models.PositiveIntegerField(default=0, editable=False, help_text="Due runs dropped by overlap")
    last_error = models.JSONField(null=True, blank=True, editable=False, help_text="Why the last due run did not start")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(agent__isnull=False, skill__isnull=True)
                | models.Q(agent__isnull=True, skill__isnull=False),
                name="schedule_agent_xor_skill",
            )
        ]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="schedule_due")]

    def __str__(self):
        return f"{self.agent or self.skill} @ {self.cron}"

    def save(self, *args, **kwargs):
        """The tenant follows the workspace; a new or re-timed schedule's next due time is computed
        from now (services.do_retime_schedule when an existing one changes)."""
        self.tenant_id = self.workspace.tenant_id
        if self.next_run_at is None:
            self.next_run_at = check_cron(self.cron, self.timezone, timezone.now())
        super().save(*args, **kwargs)

    def clean(self):
        """The admin's form: one target of the workspace, an expression that fires."""
        if (self.agent_id is None) == (self.skill_id is None):
            raise ValidationError("Choose an agent or a skill (one of them).")
        target = self.agent if self.agent_id else self.skill
        if self.workspace_id and target.workspace_id != self.workspace_id:
            raise ValidationError("The agent or skill must be of the schedule's workspace.")
        try:
            check_cron(self.cron, self.timezone, timezone.now())
        except InvalidCron as exc:
            raise ValidationError({exc.field: str(exc)})

    @property
    def public_id(self) -> str:
        return f"schedule:{self.id}"
