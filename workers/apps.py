from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """The runtime; its worker-process threads start on Celery's `worker_init` (workers/tasks.py)."""

    name = "workers"
    default_auto_field = "django.db.models.BigAutoField"
