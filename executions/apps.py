from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported once the app registry is ready (the effects import models), not to hide a cycle:
        # executions.effects imports the apps it notifies, nothing imports it back.
        from executions.effects import wire_terminal_effects

        wire_terminal_effects()
