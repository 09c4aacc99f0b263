from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # webhooks sits above executions (it reads executions; executions imports nothing of it), so
        # it registers its effects at the executions' hook points itself, once the models are loaded.
        from webhooks.events import wire_webhook_effects

        wire_webhook_effects()
