"""Operators' view of executions: the list (executions/admin_list.py), the page with its timeline
and live tail (executions/admin_page.py, admin_timeline.py), artifact downloads, cancel and purge."""

import uuid

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from core.admin import check_view_permission
from executions import (
    admin_list,
    admin_responders,  # noqa: F401  (registers the agent and skill pages)
    purge,
    services,
)
from executions.admin_actions import PURGE, ExecutionActionsMixin
from executions.admin_page import page_context
from executions.models import Artifact, Execution
from executions.stream_tokens import issue_operator_stream_token
from files.responses import stored_file_response


@admin.register(Execution)
class ExecutionAdmin(ExecutionActionsMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "responder",
        "state_badge",
        "source",
        "duration",
        "cost",
        "credits_charged",
        "failure",
        "children",
        "created",
    )
    list_display_links = ("short_id",)
    list_filter = (
        admin_list.LevelFilter,
        admin_list.ParentFilter,
        admin_list.PrincipalFilter,
        "state",
        "source",
        "workspace",
        admin_list.AgentFilter,
        admin_list.SkillFilter,
        admin_list.CustomerFilter,
        admin_list.FailureReasonFilter,
        "created_at",
    )
    search_fields = ("idempotency_key", "chat_tool_call_id")
    search_help_text = "An execution id, an idempotency key or a chat tool-call id."
    date_hierarchy = "created_at"
    list_select_related = ("workspace", "agent_version__agent", "skill_version__skill")
    list_per_page = 100
    actions = ["cancel_executions", "purge_executions"]

    class Media:
        css = {"all": ["executions/console.css"]}

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if request.method == "GET" and match and match.url_name == "executions_execution_changelist":
            return admin_list.with_child_counts(queryset)  # the rows shown (not an action's rows)
        return queryset

    @admin.display(description="id", ordering="id")
    def short_id(self, execution):
        return format_html('<span title="{}">…{}</span>', execution.id, admin_list.short_id(execution.id))

    @admin.display(description="responder")
    def responder(self, execution):
        return admin_list.responder_label(execution)

    @admin.display(description="state", ordering="state")
    def state_badge(self, execution):
        return admin_list.state_badge(execution.state)

    @admin.display(description="duration")
    def duration(self, execution):
        return admin_list.format_duration(execution)

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, execution):
        return f"${execution.cost_usd:.4f}"

    @admin.display(description="credits", ordering="credits")
    def credits_charged(self, execution):
        return f"{execution.credits.normalize():f}"

    @admin.display(description="failure", ordering="failure_reason")
    def failure(self, execution):
        return format_html('<span title="{}">{}</span>', execution.failure_reason, execution.failure_reason)

    @admin.display(description="children")
    def children(self, execution):
        return admin_list.children_link(execution)

    @admin.display(description="created", ordering="created_at")
    def created(self, execution):
        return format_html(
            '<span title="{}">{}</span>',
            execution.created_at.isoformat(),
            execution.created_at.strftime("%m-%d %H:%M:%S"),
        )

    def get_object(self, request, object_id, from_field=None):
        try:
            parsed = uuid.UUID(str(object_id).removeprefix("execution:"))
        except ValueError:
            return None
        return (
            Execution.objects.select_related(
                "workspace", "agent_version__agent", "skill_version__skill", "principal__customer"
            )
            .filter(id=parsed)
            .first()
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The read-only page: summary, timeline, inputs and outputs, tree, live tail (no form)."""
        execution = self.get_object(request, unquote(object_id))
        if execution is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, execution):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Execution …{admin_list.short_id(execution.id)}",
            "subtitle": None,
            "has_view_permission": True,
            "original": execution,
            "media": self.media,
            **page_context(request, execution),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/executions/execution/page.html", context)

    def get_urls(self):
        download = self.admin_site.admin_view(self.download_artifact)
        token = self.admin_site.admin_view(self.stream_token)
        return [
            path("artifact/<uuid:artifact_id>/download/", download, name="executions_artifact_download"),
            path("<uuid:execution_id>/stream-token/", token, name="executions_execution_stream_token"),
            *super().get_urls(),
        ]

    def stream_token(self, request, execution_id):
        """A stream token for the page's live tail (EventSource on the SSE relay, which takes no session)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        check_view_permission(request, Execution)
        execution = Execution.objects.filter(id=execution_id).first()
        if execution is None:
            raise Http404("No such execution.")
        token = issue_operator_stream_token(request.user, execution)
        return JsonResponse({"token": token, "events_url": f"/executions/{execution.id}/events?token={token}"})

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
