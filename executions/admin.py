"""Operators' view of executions: filters, search, the event timeline, children, cancel."""

import json
import uuid

from django.contrib import admin, messages
from django.http import Http404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyTabularInline, check_view_permission
from executions import purge, services
from executions.admin_actions import PURGE, ExecutionActionsMixin
from executions.models import Artifact, Execution, ExecutionEvent
from files.responses import stored_file_response

TREE_DEPTH = 5


class ExecutionEventInline(ReadOnlyTabularInline):
    model = ExecutionEvent
    fields = ("seq", "type", "created_at", "payload")
    ordering = ("seq",)
    show_change_link = False

    @admin.display(description="data")
    def payload(self, event):
        shown = {k: v for k, v in event.data.items() if k not in ("type", "execution_id", "seq")}
        return format_html("<code>{}</code>", json.dumps(shown)[:500])


class SubExecutionInline(ReadOnlyTabularInline):
    model = Execution
    fk_name = "parent"
    verbose_name = "sub-execution"
    fields = ("link", "state", "source", "created_at", "finished_at")

    @admin.display(description="id")
    def link(self, child):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:executions_execution_change", args=[child.id]), child.id
        )


class ArtifactInline(ReadOnlyTabularInline):
    model = Artifact
    fields = ("relpath_in_workspace", "document_type", "size_bytes", "download")

    @admin.display(description="download")
    def download(self, artifact):
        url = reverse("admin:executions_artifact_download", args=[artifact.id])
        return format_html('<a href="{}">download</a>', url)


@admin.register(Execution)
class ExecutionAdmin(ExecutionActionsMixin, admin.ModelAdmin):
    list_display = ("id", "state", "source", "workspace", "responder", "attempt", "created_at", "finished_at")
    list_filter = ("state", "source", "workspace", "created_at")
    search_fields = ("idempotency_key", "chat_tool_call_id")
    search_help_text = "An execution id, an idempotency key or a chat tool-call id."
    date_hierarchy = "created_at"
    list_select_related = ("workspace", "agent_version__agent", "skill_version__skill")
    inlines = [ArtifactInline, ExecutionEventInline, SubExecutionInline]
    actions = ["cancel_executions", "purge_executions"]

    def get_readonly_fields(self, request, obj=None):
        return ["sub_execution_tree"] + [field.name for field in Execution._meta.fields]

    @admin.display(description="sub-execution tree")
    def sub_execution_tree(self, execution):
        return self._tree(execution, TREE_DEPTH) or "-"

    def _tree(self, execution, depth):
        children = list(
            Execution.objects.filter(parent=execution)
            .select_related("agent_version__agent", "skill_version__skill")
            .order_by("created_at")
        )
        if not children or depth == 0:
            return ""
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">{}</a> {} {} {}</li>',
                (
                    (
                        reverse("admin:executions_execution_change", args=[child.id]),
                        child.id,
                        child.get_state_display(),
                        child.agent_version or child.skill_version or "",
                        self._tree(child, depth - 1),
                    )
                    for child in children
                ),
            ),
        )

    def get_urls(self):
        download = self.admin_site.admin_view(self.download_artifact)
        return [
            path("artifact/<uuid:artifact_id>/download/", download, name="executions_artifact_download"),
            *super().get_urls(),
        ]

    def download_artifact(self, request, artifact_id):
        check_view_permission(request, Execution, Artifact)
        artifact = Artifact.objects.filter(id=artifact_id).first()
        if artifact is None:
            raise Http404("No such artifact.")
        return stored_file_response(
            artifact.storage_key, artifact.document_type, artifact.relpath_in_workspace.rsplit("/", 1)[-1]
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="responder")
    def responder(self, execution):
        return execution.agent_version or execution.skill_version or "-"

    def get_search_results(self, request, queryset, search_term):
        """Exact matches only: an id, an idempotency key, a chat tool-call id."""
        term = search_term.strip().removeprefix("execution:")
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(idempotency_key=term) | queryset.filter(chat_tool_call_id=term), False

    @admin.action(description="Cancel the selected executions", permissions=["change"])
    def cancel_executions(self, request, queryset):
        for execution in queryset:
            services.do_request_cancel(execution, by=f"admin:{request.user.get_username()}")
        self.message_user(request, f"Cancel requested for {queryset.count()} execution(s).", messages.SUCCESS)

    def has_purge_permission(self, request):
        """The bulk purge needs the permission the per-execution action needs (executions/admin_actions.py)."""
        return request.user.has_perm(PURGE)

    @admin.action(description="Purge the selected executions", permissions=["purge"])
    def purge_executions(self, request, queryset):
        """Erase their inputs, outputs, events and files; keep the rows and their accounting."""
        purged, skipped = purge.purge_executions(queryset)
        self.message_user(request, f"Purged {purged} execution(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"Skipped {skipped} unfinished execution(s): only finished ones are purged.", messages.WARNING
            )
