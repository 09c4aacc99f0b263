from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The HTTP surfaces: the agents API, the skills API and the executions query API."""

    name = "api"

    def ready(self):
        import api.http.openapi  # noqa: F401  registers the API-key security schemes
