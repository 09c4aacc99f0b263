"""A workspace's webhook endpoints, the deliveries of events to them (the outbox), and each attempt."""

import uuid

from django.db import models

from accounts.models import Tenant, Workspace
from core.ids import uuid7


class WebhookEvent(models.TextChoices):
    EXECUTION_COMPLETED = "execution.completed"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_CANCELLED = "execution.cancelled"
    EXECUTION_SUSPENDED = "execution.suspended"


class WebhookEndpoint(models.Model):
    """Where a workspace wants its events. `secret` (`whsec_<base64>`) signs every delivery, so it is
    stored as it is (like a model provider key, it must be usable, not only checkable); it is shown
    once when the endpoint is created and never again (the API and the admin leave it out)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2048, help_text="http:// or https://; its host must resolve to public addresses")
    events = models.JSONField(default=list, help_text="Event types: " + ", ".join(WebhookEvent.values))
    secret = models.CharField(max_length=100, editable=False)
    description = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    # The failures since its last success: the automatic disabling counts them.
    consecutive_failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    # after a failed attempt, none of its deliveries is attempted before this (webhooks/delivery.py)
    backoff_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["workspace", "enabled"], name="webhook_endpoint_ws_enabled")]

    def __str__(self):
        return self.url

    @property
    def public_id(self) -> str:
        return f"webhook:{self.id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # an attempt is due or scheduled
    SUCCEEDED = "succeeded"  # a 2xx answer
    FAILED = "failed"  # retries exhausted, or its endpoint was disabled


class WebhookDelivery(models.Model):
    """One event for one endpoint: written in the transaction of the execution's transition (the
    outbox), sent by a Celery task on commit, retried from the row. Its id is the `webhook-id` of
    every attempt, so a receiver can drop a repeat."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=64, choices=WebhookEvent.choices)
    execution_id = models.UUIDField(null=True, blank=True, db_index=True)
    # The exact body every attempt sends (and signs): the payload as JSON text, fixed at the event.
    body = models.TextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts started; the fencing token of the current one"
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # No retry is scheduled past this (WEBHOOK_RETRY_WINDOW_SECONDS after the event or a manual redelivery).
    retry_until = models.DateTimeField()
    # When its task message was last published (NULL: none is out for the due attempt).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # While an attempt is in flight: past this, its worker is taken for dead and the attempt is due again.
    locked_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due", condition=models.Q(status="pending")),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint"),
            # an endpoint's attempts in flight (per-endpoint concurrency, webhooks/delivery.py)
            models.Index(
                fields=["endpoint", "locked_until"],
                name="webhook_delivery_in_flight",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self):
        return f"{self.event_type} {self.webhook_id}"

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` header: the same on every attempt and redelivery."""
        return f"msg_{self.id.hex}"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, for the delivery log: what answered, or what went wrong."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    response_excerpt = models.CharField(max_length=500, blank=True, default="", help_text="The answer's first bytes")

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self):
        return f"attempt {self.number}: {self.status_code or self.error}"
