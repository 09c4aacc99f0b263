"""Sending a delivery: one attempt per task, its outcome on the row, retries scheduled on the row.

At least once, never lost: the row is the outbox and the schedule. A task message is published
after the commit that wrote (or rescheduled) the row; an attempt is claimed by a conditional UPDATE
that also sets `locked_until`, so two messages of one delivery never send at once; a worker that
dies mid-attempt leaves a lock that expires; beat's sweep (`sweep_due`) publishes every delivery
whose retry is due, whose lock expired, or whose message was never published. A message is published
once: the sweep publishes one again only when it may be lost (out for EXECUTION_REDISPATCH_AFTER_SECONDS
while the webhooks queue is empty; with a backlog waiting, it is in it). Every attempt carries the
delivery's `webhook-id` and a fresh `webhook-timestamp`. Deliveries have a queue and processes of
their own (settings.WEBHOOKS_QUEUE), so their backlog never delays an execution.

One endpoint cannot take the webhooks processes for itself: at most WEBHOOK_ENDPOINT_MAX_IN_FLIGHT of
its attempts run at once, and after a failed attempt none of its deliveries is attempted before its
`backoff_until` (the same exponential delay as a delivery's retries, by the endpoint's failures in a
row). A delivery that meets either waits (`next_attempt_at` moved, no attempt counted) for the sweep.

Retries: the n-th failed attempt schedules the next WEBHOOK_RETRY_BASE_SECONDS * 2^(n-1) seconds
later (at most WEBHOOK_RETRY_MAX_DELAY_SECONDS), until `retry_until` (WEBHOOK_RETRY_WINDOW_SECONDS,
24 h, after the event): then the delivery has failed. An endpoint whose attempts failed
WEBHOOK_DISABLE_AFTER_FAILURES times in a row over at least WEBHOOK_DISABLE_AFTER_SECONDS (no
success between) is disabled, and its pending deliveries fail.
"""

import logging
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.broker import waiting_messages
from core.connections import release_connection
from webhooks import transport
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.signing import signed_headers

logger = logging.getLogger(__name__)

DELIVER_TASK = "workers.tasks.deliver_webhook"
USER_AGENT = "skillrun-webhooks/1"
SWEEP_BATCH = 500


def retry_delay(failed_attempts: int) -> float:
    """Seconds from the n-th failed attempt to the next: exponential, capped."""
    return min(
        settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (failed_attempts - 1), settings.WEBHOOK_RETRY_MAX_DELAY_SECONDS
    )


def lock_seconds() -> float:
    """How long an attempt may be in flight before its worker is taken for dead: its deadline plus
    the name resolution (not under the deadline) and the bookkeeping."""
    return settings.WEBHOOK_TIMEOUT_SECONDS + 5


def publish_on_commit(delivery_ids: list) -> None:
    """One task message per delivery once the caller's transaction commits. A message that cannot
    be published (the broker is down) is marked (`dispatched_at` NULL) for the next sweep."""
    if not delivery_ids:
        return

    def publish():
        for delivery_id in delivery_ids:
            try:
                current_app.send_task(DELIVER_TASK, args=[str(delivery_id)])
            except Exception:  # kombu's OperationalError, a Redis error: any message not sent
                logger.warning("webhook delivery %s: task not published, left to the sweep", delivery_id, exc_info=True)
                WebhookDelivery.objects.filter(id=delivery_id).update(dispatched_at=None)

    transaction.on_commit(publish)


ENDPOINT_BUSY_DELAY_SECONDS = 1.0  # a delivery whose endpoint has its maximum in flight tries again this much later


def _claim(delivery_id) -> WebhookDelivery | str:
    """The delivery, claimed for an attempt; or why not: "skipped" (not due, or another attempt holds
    it), "deferred" (its endpoint is backing off or has its maximum in flight).

    The claims of one endpoint's deliveries are serialised by a lock on the endpoint's row, so two
    workers cannot both see a free slot and take the last one."""
    now = timezone.now()
    claimable = WebhookDelivery.objects.filter(
        id=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
    with transaction.atomic():
        endpoint_id = claimable.values_list("endpoint_id", flat=True).first()
        if endpoint_id is None:
            return "skipped"
        endpoint = WebhookEndpoint.objects.select_for_update().get(id=endpoint_id)
        in_flight = WebhookDelivery.objects.filter(
            endpoint_id=endpoint_id, status=DeliveryStatus.PENDING, locked_until__gt=now
        ).count()
        if endpoint.enabled and (
            endpoint.backoff_until
            and endpoint.backoff_until > now
            or in_flight >= settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT
        ):
            later = max(endpoint.backoff_until or now, now + timedelta(seconds=ENDPOINT_BUSY_DELAY_SECONDS))
            claimable.update(next_attempt_at=later, dispatched_at=None)
            return "deferred"
        claimed = claimable.update(
            attempts=F("attempts") + 1,
            locked_until=now + timedelta(seconds=lock_seconds()),
            dispatched_at=None,
        )
    if not claimed:
        return "skipped"
    return (
        WebhookDelivery.objects.select_related("endpoint").filter(id=delivery_id).first() or "skipped"
    )  # deleted since


def _fenced(delivery: WebhookDelivery):
    """The delivery's row if this attempt is still its latest (a lock that expired under a slow
    attempt may have let another one start)."""
    return WebhookDelivery.objects.filter(id=delivery.id, attempts=delivery.attempts, status=DeliveryStatus.PENDING)


def do_deliver(delivery_id) -> str:
    """One attempt of a delivery, if it is due and nobody else is attempting it. Returns what happened."""
    delivery = _claim(delivery_id)
    if isinstance(delivery, str):
        return delivery
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        _fenced(delivery).update(
            status=DeliveryStatus.FAILED,
            finished_at=timezone.now(),
            next_attempt_at=None,
            locked_until=None,
            last_error="endpoint disabled",
        )
        return "endpoint_disabled"
    started_at = timezone.now()
    clock = time.monotonic()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signed_headers(endpoint.secret, delivery.webhook_id, int(time.time()), delivery.body),
    }
    release_connection()  # the HTTP request may take WEBHOOK_TIMEOUT_SECONDS: no connection held meanwhile
    answer = transport.post(
        endpoint.url,
        delivery.body.encode(),
        headers,
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS,
    )
    succeeded = answer.status_code is not None and 200 <= answer.status_code < 300
    error = answer.error or ("" if succeeded else f"HTTP {answer.status_code}")
    try:
        _record(delivery, answer, succeeded, error, started_at, clock)
    except IntegrityError:
        if WebhookDelivery.objects.filter(id=delivery.id).exists():
            raise
        logger.info("webhook delivery %s: its endpoint was deleted during the attempt", delivery.id)
        return "endpoint_deleted"
    return "succeeded" if succeeded else "failed"


def _record(delivery: WebhookDelivery, answer, succeeded: bool, error: str, started_at, clock: float) -> None:
    """The attempt's log line and the delivery's next state, in one transaction. IntegrityError when
    the endpoint (and so the delivery) was deleted while the request was in flight."""
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=started_at,
            duration_ms=int((time.monotonic() - clock) * 1000),
            status_code=answer.status_code,
            error=error[:500],
            response_excerpt=answer.excerpt,
        )
        if succeeded:
            _succeeded(delivery, answer.status_code)
        else:
            _failed(delivery, answer.status_code, error)


def _succeeded(delivery: WebhookDelivery, status_code: int) -> None:
    now = timezone.now()
    _fenced(delivery).update(
        status=DeliveryStatus.SUCCEEDED,
        finished_at=now,
        next_attempt_at=None,
        locked_until=None,
        last_status_code=status_code,
        last_error="",
    )
    WebhookEndpoint.objects.filter(id=delivery.endpoint_id).update(
        consecutive_failures=0, failing_since=None, backoff_until=None
    )


def _failed(delivery: WebhookDelivery, status_code: int | None, error: str) -> None:
    now = timezone.now()
    next_at = now + timedelta(seconds=retry_delay(delivery.attempts))
    gave_up = next_at > delivery.retry_until
    _fenced(delivery).update(
        status=DeliveryStatus.FAILED if gave_up else DeliveryStatus.PENDING,
        finished_at=now if gave_up else None,
        next_attempt_at=None if gave_up else next_at,
        locked_until=None,
        dispatched_at=None,
        last_status_code=status_code,
        last_error=error[:500],
    )
    endpoint = WebhookEndpoint.objects.filter(id=delivery.endpoint_id)
    endpoint.update(consecutive_failures=F("consecutive_failures") + 1, failing_since=Coalesce(F("failing_since"), now))
    failures = endpoint.values_list("consecutive_failures", flat=True).first() or 1
    endpoint.update(backoff_until=now + timedelta(seconds=retry_delay(failures)))
    _disable_if_failing(delivery.endpoint_id, now)


def _disable_if_failing(endpoint_id, now) -> None:
    disabled = WebhookEndpoint.objects.filter(
        id=endpoint_id,
        enabled=True,
        consecutive_failures__gte=settings.WEBHOOK_DISABLE_AFTER_FAILURES,
        failing_since__lte=now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS),
    ).update(
        enabled=False,
        disabled_at=now,
        disabled_reason=f"{settings.WEBHOOK_DISABLE_AFTER_FAILURES}+ failed attempts in a row since the last success",
    )
    if disabled:
        logger.warning("webhook endpoint %s disabled after repeated failures", endpoint_id)
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING).filter(
            Q(locked_until__isnull=True) | Q(locked_until__lt=now)
        ).update(status=DeliveryStatus.FAILED, finished_at=now, next_attempt_at=None, last_error="endpoint disabled")


def sweep_due() -> list:
    """Beat's sweep: publish the deliveries due for an attempt whose message is not out (a retry
    that came due, a wait for the endpoint that ended, a lock that expired with its worker, a
    publish that failed), or may be lost: published longer than EXECUTION_REDISPATCH_AFTER_SECONDS
    ago, never consumed, and the webhooks queue is empty (core/broker.py)."""
    now = timezone.now()
    not_out = Q(dispatched_at__isnull=True)
    if waiting_messages(settings.WEBHOOKS_QUEUE) == 0:
        not_out |= Q(dispatched_at__lt=now - timedelta(seconds=settings.EXECUTION_REDISPATCH_AFTER_SECONDS))
    due = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .filter(not_out)
        .order_by("next_attempt_at")
    )
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True).values_list("id", flat=True)[:SWEEP_BATCH])
        if ids:
            WebhookDelivery.objects.filter(id__in=ids).update(dispatched_at=now)
            publish_on_commit(ids)
    return ids


def do_redeliver(deliveries) -> int:
    """The admin's manual redelivery: each delivery (with its webhook-id) is attempted again now,
    with a fresh retry window and its endpoint's backoff lifted; a delivery with an attempt in flight
    or a disabled endpoint is skipped."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            deliveries.filter(endpoint__enabled=True)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
            .values_list("id", flat=True)
        )
        # an operator's "now" is now: their endpoints' backoff does not hold these back
        WebhookEndpoint.objects.filter(deliveries__id__in=ids).update(backoff_until=None)
        WebhookDelivery.objects.filter(id__in=ids).update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            retry_until=now + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS),
            finished_at=None,
            locked_until=None,
            dispatched_at=now,
        )
        publish_on_commit(ids)
    return len(ids)


def purge_old_deliveries() -> int:
    """The delivery log is kept WEBHOOK_DELIVERY_RETENTION_DAYS after a delivery ended (its body holds
    the execution's outputs); pending ones are never removed."""
    before = timezone.now() - timedelta(days=settings.WEBHOOK_DELIVERY_RETENTION_DAYS)
    deleted, _ = WebhookDelivery.objects.exclude(status=DeliveryStatus.PENDING).filter(finished_at__lt=before).delete()
    return deleted
