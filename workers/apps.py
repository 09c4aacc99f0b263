import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


class WorkersConfig(AppConfig):
    name = "workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from celery.signals import worker_init

        worker_init.connect(start_run_threads, weak=False)


def start_run_threads(**_):
    """In a Celery worker process: the threads shared by all its runs (event writer, lease renewer)."""
    from workers.event_writer import start_writer
    from workers.leases import start_renewer

    start_writer()
    start_renewer()
    logger.info("event writer and lease renewer started")
