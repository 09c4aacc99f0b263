"""The agent and skill pages of the operators' console (issue 13, item 4): their version history
with a diff between versions, how their executions did over the last 24 h, their latest
executions, and a "run now" form that starts one and opens its live page.

The admins of agents/admin.py are extended here rather than there: the executions are a layer
above the agents (pyproject.toml's import contracts), so the agents app cannot read them.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse

from agents.admin import AgentAdmin, SkillAdmin
from agents.models import Agent, Skill
from agents.version_history import diff_lines, version_history
from core.errors import ApiError
from executions.admin_list import LIST_URL, format_ms
from executions.admin_page import change_url
from executions.admin_run_now import (
    AgentRunForm,
    SkillRunForm,
    error_text,
    run_agent_now,
    run_skill_now,
)
from executions.responder_stats import agent_executions, responder_stats, skill_executions

RECENT_EXECUTIONS = 10


def duration_text(value) -> str:
    return "-" if value is None else format_ms(int(value.total_seconds() * 1000))


class ResponderConsoleMixin:
    """What the agent and skill pages share; subclasses name the definition, the executions, the form."""

    change_form_template = "admin/agents/console_change_form.html"
    inlines = []
    run_form = None
    list_filter_param = ""

    def definition_of(self, version):
        raise NotImplementedError

    def executions_of(self, obj):
        raise NotImplementedError

    def start(self, form):
        raise NotImplementedError

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("<path:object_id>/run/", self.admin_site.admin_view(self.run_now), name=f"{info[0]}_{info[1]}_run"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if obj is not None:
            context.update(self.console_context(request, obj))
        return super().change_view(request, object_id, form_url, context)

    def console_context(self, request, obj) -> dict:
        versions = list(obj.versions.all())
        history = version_history(versions, self.definition_of)
        compare = None
        by_number = {version.number: version for version in versions}
        try:
            older, newer = int(request.GET.get("diff_from", "")), int(request.GET.get("diff_to", ""))
        except ValueError:
            older = newer = None
        if older in by_number and newer in by_number:
            compare = {
                "older": older,
                "newer": newer,
                "lines": diff_lines(
                    self.definition_of(by_number[older]), self.definition_of(by_number[newer]), f"v{older}", f"v{newer}"
                ),
            }
        executions = self.executions_of(obj)
        recent = list(
            executions.select_related("agent_version", "skill_version").order_by("-created_at")[:RECENT_EXECUTIONS]
        )
        stats = responder_stats(executions)
        return {
            "history": history,
            "compare": compare,
            "stats": stats,
            "p50": duration_text(stats.p50),
            "p95": duration_text(stats.p95),
            "recent": recent,
            "all_executions_url": reverse(LIST_URL) + f"?{self.list_filter_param}={obj.pk}&level=all",
            "run_form": self.run_form(**{self.opts.model_name: obj}),
            "run_url": reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_run", args=[obj.pk]),
        }

    def run_now(self, request, object_id):
        """POST: start an execution of the live version and open its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        form = self.run_form(request.POST, **{self.opts.model_name: obj})
        back = HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
        )
        if not form.is_valid():
            errors = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
            self.message_user(request, f"Not started: {errors}", messages.ERROR)
            return back
        try:
            execution = self.start(form)
        except ApiError as exc:
            self.message_user(request, f"Not started: {error_text(exc)}", messages.ERROR)
            return back
        self.log_addition(request, execution, [{"added": {"name": "execution", "object": f"run now of {obj}"}}])
        self.message_user(request, f"Started execution {execution.id}.", messages.SUCCESS)
        return HttpResponseRedirect(change_url(execution.id))


admin.site.unregister(Agent)
admin.site.unregister(Skill)


@admin.register(Agent)
class AgentConsoleAdmin(ResponderConsoleMixin, AgentAdmin):
    run_form = AgentRunForm
    list_filter_param = "agent"

    def definition_of(self, version):
        return version.workflow

    def executions_of(self, obj):
        return agent_executions(obj)

    def start(self, form):
        return run_agent_now(form)


@admin.register(Skill)
class SkillConsoleAdmin(ResponderConsoleMixin, SkillAdmin):
    run_form = SkillRunForm
    list_filter_param = "skill"

    def definition_of(self, version):
        return version.manifest

    def executions_of(self, obj):
        return skill_executions(obj)

    def start(self, form):
        return run_skill_now(form)
