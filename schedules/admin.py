"""Operators manage schedules here: target, expression, zone, inputs, overlap, and what the last
due run did."""

from django.contrib import admin

from schedules import services
from schedules.models import Schedule


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("id", "workspace", "agent", "skill", "cron", "timezone", "overlap", "enabled", "next_run_at")
    list_filter = ("enabled", "overlap", "workspace")
    search_fields = ("cron",)
    raw_id_fields = ("workspace", "principal", "agent", "skill")
    readonly_fields = (
        "next_run_at",
        "last_run_at",
        "last_execution",
        "queued_runs",
        "skipped_runs",
        "last_error",
        "created_at",
        "updated_at",
    )

    def save_model(self, request, obj, form, change):
        """A changed expression, zone or re-enabled schedule is due next from now, not from before."""
        if change and {"cron", "timezone", "enabled"} & set(form.changed_data):
            services.do_retime_schedule(schedule=obj)
        super().save_model(request, obj, form, change)
