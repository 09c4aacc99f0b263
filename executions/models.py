"""The Execution row (one per run of a skill or an agent) and its durable event log."""

import uuid

from django.db import models

from accounts.models import Principal, Tenant, Workspace
from agents.models import AgentVersion, SkillVersion
from core.ids import uuid7
from core.json import FiniteJSONEncoder


class ExecutionState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_CLIENT_TOOL = "awaiting_client_tool"
    AWAITING_APPROVAL = "awaiting_approval"
    WAITING_FOR_EXTERNAL_EVENT = "waiting_for_external_event"
    WAITING_FOR_SUB_EXECUTION = "waiting_for_sub_execution"  # a workflow's agent/skill node, or a batch
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


SUSPENDED_STATES = (
    ExecutionState.AWAITING_CLIENT_TOOL,
    ExecutionState.AWAITING_APPROVAL,
    ExecutionState.WAITING_FOR_EXTERNAL_EVENT,
    ExecutionState.WAITING_FOR_SUB_EXECUTION,
)
TERMINAL_STATES = (ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED)


class ExecutionSource(models.TextChoices):
    STANDALONE = "standalone"
    CHAT = "chat"
    API = "api"
    STREAM = "stream"
    BATCH = "batch"
    BATCH_ITEM = "batch_item"
    SUB = "sub"
    SCHEDULE = "schedule"  # started by a workspace's schedule (schedules/services.py)


class Execution(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # time-ordered: see core.ids
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="executions")
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="executions")
    principal = models.ForeignKey(Principal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_version = models.ForeignKey(AgentVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    skill_version = models.ForeignKey(SkillVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=16, choices=ExecutionSource.choices)
    state = models.CharField(max_length=32, choices=ExecutionState.choices, default=ExecutionState.QUEUED)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    # An operator's rerun (executions/reruns.py): the execution this one retries, or forks from a checkpoint of.
    # Sparse: partial indexes (Meta) instead of Django's full ones, which every execution row would
    # write an entry (a NULL) in at its INSERT and at each non-HOT UPDATE (bench/README.md).
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries", db_index=False
    )
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks", db_index=False
    )
    forked_from_seq = models.PositiveIntegerField(
        null=True, blank=True, help_text="The seq of the source's checkpoint the fork started from"
    )

    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(null=True, blank=True, encoder=FiniteJSONEncoder)
    error = models.JSONField(null=True, blank=True, encoder=FiniteJSONEncoder)
    failure_reason = models.CharField(max_length=64, blank=True, default="")

    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    wallclock_ms = models.BigIntegerField(null=True, blank=True)
    iteration_count = models.IntegerField(default=0)
    credits = models.DecimalField(max_digits=18, decimal_places=6, default=0, help_text="Credits charged")
    credits_held = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    credit_account = models.ForeignKey(
        "accounts.CreditAccount", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    chat_thread_id = models.CharField(max_length=128, blank=True, default="")
    chat_message_id = models.CharField(max_length=128, blank=True, default="")
    chat_tool_call_id = models.CharField(max_length=128, blank=True, default="")
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    trace_id = models.CharField(max_length=64, blank=True, default="")
    batch_key = models.CharField(max_length=128, blank=True, default="", help_text="The item key of a batch item")
    # Skills: the resolved model alias it runs on, the files to stage, the archived workspace.
    model_config = models.JSONField(null=True, blank=True)
    file_source_ids = models.JSONField(default=list, blank=True)
    workspace_archive = models.ForeignKey(
        "files.StoredFile", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Durable runtime: lease (attempt is the fencing token), checkpoint, resume input, cancel flag.
    attempt = models.PositiveIntegerField(default=0)
    recoveries = models.PositiveIntegerField(default=0, help_text="Times the reaper re-queued it after a lost lease")
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True, encoder=FiniteJSONEncoder)
    resume_input = models.JSONField(null=True, blank=True, encoder=FiniteJSONEncoder)
    # A suspended node with a timeout (human gate, external event): the reaper resumes it with the
    # checkpoint's `timeout_input` once this passes.
    resume_deadline = models.DateTimeField(null=True, blank=True, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    # Who asked for the cancel when not the API's caller (an operator: `admin:<username>`); the worker
    # that stops the run names them in its `error` event.
    cancel_requested_by = models.CharField(max_length=200, blank=True, default="")
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="When its task message was last published")
    # Queued behind its workspace's running cap, with no task message out (executions/concurrency.py):
    # a slot that frees dispatches the oldest such row again.
    deferred_at = models.DateTimeField(
        null=True, blank=True, help_text="Held back by the workspace's max_running_executions since"
    )
    last_event_seq = models.PositiveIntegerField(default=0)
    # Purged (executions/purge.py): inputs, outputs, events and files erased; accounting kept.
    is_purged = models.BooleanField(default=False)
    purged_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="execution_ws_created"),
            models.Index(fields=["state", "lease_expires_at"], name="execution_state_lease"),
            models.Index(fields=["chat_tool_call_id"], name="execution_chat_tool_call"),
            # The running cap: a workspace's running rows and its queue in order (executions/concurrency.py).
            models.Index(
                fields=["workspace", "state", "id"],
                name="execution_ws_active",
                condition=models.Q(state__in=["queued", "running"]),
            ),
            models.Index(
                fields=["workspace", "id"],
                name="execution_ws_deferred",
                condition=models.Q(state="queued", deferred_at__isnull=False),
            ),
            models.Index(fields=["retry_of"], name="execution_retry_of", condition=models.Q(retry_of__isnull=False)),
            models.Index(
                fields=["forked_from"], name="execution_forked_from", condition=models.Q(forked_from__isnull=False)
            ),
            # /metrics: the queue's depth and its oldest execution at each scrape (ops/metrics.py)
            models.Index(fields=["updated_at"], condition=models.Q(state="queued"), name="execution_queued_since"),
        ]
        permissions = [
            ("refund_execution", "Can refund the credits of an execution"),
            ("purge_execution", "Can purge an execution"),
        ]

    def __str__(self):
        return f"{self.id} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def responder_type(self) -> str:
        """What it runs, for metrics: agent, skill or batch (a batch's parent row)."""
        if self.source == ExecutionSource.BATCH:
            return "batch"
        return "agent" if self.agent_version_id else "skill" if self.skill_version_id else "none"

    @property
    def public_id(self) -> str:
        """How the execution's own surface names it: the agents API prefixes its ids."""
        return f"execution:{self.id}" if self.agent_version_id else str(self.id)

    def usage(self) -> dict:
        """The `usage` object of the agents API's execution and of the webhooks' payloads."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "cost_usd": str(self.cost_usd),
            "wallclock_ms": self.wallclock_ms,
        }


class ExecutionEvent(models.Model):
    """One event of an execution's ordered log; seq is 1, 2, 3, ... per execution.

    `data` holds the whole event JSON as clients receive it (type, execution_id, seq included),
    so the SSE relay sends it without re-encoding.
    """

    id = models.BigAutoField(primary_key=True)
    # no separate index: the unique (execution, seq) constraint's index serves every lookup
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict, encoder=FiniteJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [models.UniqueConstraint(fields=["execution", "seq"], name="execution_event_seq_unique")]

    def __str__(self):
        return f"{self.execution_id}#{self.seq} {self.type}"


class ExecutionCheckpoint(models.Model):
    """One checkpoint of a run as it was saved, kept so that a fork can start from any of them
    (executions/reruns.py). `seq` is the seq of the last event it covers (the checkpoint's
    `event_seq`); the latest one is also the execution's own `checkpoint`. Written by the statement
    or transaction that saves that one (executions/services.py), erased by a purge."""

    id = models.BigAutoField(primary_key=True)
    # no separate index: the (execution, seq) index serves every lookup
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="checkpoints", db_index=False)
    seq = models.PositiveIntegerField()
    data = models.JSONField(default=dict, encoder=FiniteJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["execution", "seq"], name="execution_checkpoint_seq")]

    def __str__(self):
        return f"{self.execution_id}@{self.seq}"


class Artifact(models.Model):
    """A file a skill wrote under `outputs/` of its workspace, kept in storage after the run."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="artifacts")
    relpath_in_workspace = models.CharField(max_length=1024)
    document_type = models.CharField(max_length=100, help_text="The content type")
    size_bytes = models.BigIntegerField()
    storage_key = models.CharField(max_length=1024)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["relpath_in_workspace"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "relpath_in_workspace"], name="artifact_path_unique")
        ]

    def __str__(self):
        return self.relpath_in_workspace


class IdempotencyKey(models.Model):
    """An Idempotency-Key a principal sent in a workspace: unique while it lives (24 h), then reusable.
    Per principal, so one end user's key never answers with another's execution."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the route and the request body")
    execution = models.ForeignKey(Execution, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "principal", "key"], name="idempotency_key_per_principal")
        ]

    def __str__(self):
        return self.key


class MediaRequest(models.Model):
    """A job a media provider (Fal.ai) runs for a waiting `media_generation` node: found by the
    provider's request id when its webhook arrives, and holding the result once it came (by webhook
    or by the node's polling), so a repeated webhook changes nothing."""

    id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="media_requests")
    node_id = models.CharField(max_length=128)
    provider = models.CharField(max_length=32)
    request_id = models.CharField(max_length=128)
    result = models.JSONField(null=True, blank=True, help_text='{"status": "OK"|"ERROR", "payload", "error"}')
    received_via = models.CharField(max_length=16, blank=True, default="", help_text="webhook or poll")
    received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "request_id"], name="media_request_provider_id_unique")
        ]

    def __str__(self):
        return f"{self.provider}:{self.request_id}"
