"""Celery tasks: thin wrappers over the runtime and the reaper services."""

import logging

import redis
from celery import shared_task
from celery.signals import worker_init, worker_shutting_down
from django.conf import settings
from prometheus_client import start_http_server

from core.metrics import REAPER_RECOVERIES, metrics_registry
from executions import purge, services
from schedules import services as schedules
from webhooks import delivery
from workers import runtime, shutdown
from workers.event_writer import start_writer
from workers.leases import start_renewer

logger = logging.getLogger(__name__)


@worker_init.connect(weak=False)
def start_run_threads(**_):
    """In a Celery worker process (this module is imported by its loader before `worker_init`):
    the threads shared by all its runs (event writer, lease renewer, shutdown watchdog)."""
    start_writer()
    start_renewer()
    shutdown.start_watchdog()
    logger.info("event writer, lease renewer and shutdown watchdog started")
    if settings.WORKER_METRICS_PORT:
        start_http_server(settings.WORKER_METRICS_PORT, registry=metrics_registry())
        logger.info("metrics served on port %s", settings.WORKER_METRICS_PORT)


@worker_shutting_down.connect(weak=False)
def hand_back_on_shutdown(**_):
    """SIGTERM (Celery's warm shutdown; sent from its signal handler, before its wait for the tasks
    in flight): claim nothing more, and hand the runs in flight back at the end of their grace
    (workers/shutdown.py)."""
    shutdown.begin()


@shared_task(name="workers.tasks.run_execution", ignore_result=True)
def run_execution(execution_id: str) -> str:
    return runtime.run_execution(execution_id)


@shared_task(name="workers.tasks.reap_executions", ignore_result=True)
def reap_executions() -> dict:
    reaped = services.reap_expired_leases()
    reaped["redispatched"] = services.redispatch_stale_queued()
    reaped["timed_out"] = services.resume_timed_out()
    reaped["released"] = services.release_deferred()
    for action, ids in reaped.items():
        if ids:
            REAPER_RECOVERIES.labels(action).inc(len(ids))
    return {key: [str(i) for i in ids] for key, ids in reaped.items()}


@shared_task(name="workers.tasks.purge_expired_executions", ignore_result=True)
def purge_expired_executions() -> int:
    """Purge the finished executions older than their workspace's execution_retention_days, and the
    webhook deliveries past WEBHOOK_DELIVERY_RETENTION_DAYS."""
    delivery.purge_old_deliveries()
    return purge.purge_expired_executions()


@shared_task(name="workers.tasks.deliver_webhook", ignore_result=True)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt of a webhook delivery (the row decides whether it is due; webhooks/delivery.py)."""
    return delivery.do_deliver(delivery_id)


@shared_task(name="workers.tasks.sweep_webhook_deliveries", ignore_result=True)
def sweep_webhook_deliveries() -> int:
    """Beat: publish the webhook deliveries that are due and whose message is not out."""
    return len(delivery.sweep_due())


@shared_task(name="workers.tasks.noop_roundtrip", ignore_result=True)
def noop_roundtrip(reply_key: str) -> None:
    """The benchmark's baseline: a bare Celery task that only answers on a Redis list."""
    redis.Redis.from_url(settings.REDIS_URL).lpush(reply_key, b"done")


@shared_task(name="workers.tasks.fire_due_schedules", ignore_result=True)
def fire_due_schedules() -> dict:
    """Start the executions of the schedules due now (schedules/services.py: exactly once per due time)."""
    return schedules.fire_due_schedules()
