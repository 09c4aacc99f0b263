"""Operators' view of webhooks: endpoints (registered here too, the secret shown once), the
delivery log with each attempt's answer, manual redelivery, re-enabling a disabled endpoint."""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin import ReadOnlyTabularInline
from webhooks import delivery, services
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.validation import EVENTS, url_problem


class EndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(choices=[(e, e) for e in EVENTS], widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ("workspace", "url", "events", "description", "enabled")

    def clean_url(self):
        url = self.cleaned_data["url"]
        problem = url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("url", "workspace", "event_list", "enabled", "consecutive_failures", "disabled_at", "deliveries")
    list_filter = ("enabled", "workspace")
    search_fields = ("url",)
    actions = ["enable_endpoints", "disable_endpoints"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("workspace", "url", "events", "description")
        return (
            "workspace",
            "url",
            "events",
            "description",
            "enabled",
            "disabled_at",
            "disabled_reason",
            "consecutive_failures",
            "failing_since",
            "created_at",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("workspace", "disabled_at", "disabled_reason", "consecutive_failures", "failing_since", "created_at")

    @admin.display(description="events")
    def event_list(self, endpoint):
        return ", ".join(endpoint.events)

    @admin.display(description="delivery log")
    def deliveries(self, endpoint):
        url = reverse("admin:webhooks_webhookdelivery_changelist") + f"?endpoint__id__exact={endpoint.id}"
        return format_html('<a href="{}">deliveries</a>', url)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        created = services.check_create_endpoint(
            workspace=obj.workspace, url=obj.url, events=obj.events, description=obj.description
        )
        obj.pk = created.endpoint.pk
        obj.__dict__.update(created.endpoint.__dict__)
        self.message_user(
            request,
            f"Signing secret (copy it now, it will not be shown again): {created.secret}",
            messages.WARNING,
        )

    @admin.action(description="Enable the selected endpoints (the failure count starts over)")
    def enable_endpoints(self, request, queryset):
        enabled = services.do_enable_endpoints(endpoints=queryset)
        self.message_user(request, f"Enabled {enabled} endpoint(s).", messages.SUCCESS)

    @admin.action(description="Disable the selected endpoints")
    def disable_endpoints(self, request, queryset):
        disabled = queryset.filter(enabled=True).update(
            enabled=False, disabled_at=timezone.now(), disabled_reason="disabled by an operator"
        )
        self.message_user(request, f"Disabled {disabled} endpoint(s).", messages.SUCCESS)


class WebhookAttemptInline(ReadOnlyTabularInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "duration_ms", "status_code", "error", "response_excerpt")
    ordering = ("number",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "webhook_id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event_type", "endpoint__workspace")
    search_fields = ("execution_id",)
    list_select_related = ("endpoint",)
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def get_readonly_fields(self, request, obj=None):
        return ["webhook_id"] + [field.name for field in WebhookDelivery._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="webhook-id")
    def webhook_id(self, delivery_row):
        return delivery_row.webhook_id

    @admin.action(description="Redeliver the selected deliveries now (same webhook-id)")
    def redeliver(self, request, queryset):
        count = queryset.count()
        redelivered = delivery.do_redeliver(queryset)
        self.message_user(request, f"Redelivering {redelivered} delivery(ies).", messages.SUCCESS)
        if redelivered < count:
            self.message_user(
                request,
                f"Skipped {count - redelivered}: an attempt in flight, or a disabled endpoint (enable it first).",
                messages.WARNING,
            )
