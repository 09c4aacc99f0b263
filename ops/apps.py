from django.apps import AppConfig


class OpsConfig(AppConfig):
    """How the platform's processes run: embedded servers, process command lines, `make run`, health."""

    name = "ops"
