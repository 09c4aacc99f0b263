from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The shared kernel: errors, ids, query parameters, timestamps, pagination, permissions."""

    name = "core"
