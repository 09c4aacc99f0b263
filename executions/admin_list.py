"""The executions list of the operators' console: its columns and filters (issue 13, item 1).

Batch items and sub-executions are listed under their parent, not as rows of their own: the list
shows top-level executions by default, each with the count of its children (one subquery, no
query per row) linking to them (`?parent=<id>`); the "level" filter shows them all.
"""

from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.models import Customer
from agents.models import Agent, Skill
from core.ids import parse_prefixed_id
from executions.models import Execution, ExecutionState

LIST_URL = "admin:executions_execution_changelist"


def short_id(execution_id) -> str:
    """The last 8 hex digits: an id's first ones are its creation time (uuid7), shared by neighbours."""
    return str(execution_id).replace("-", "")[-8:]


def state_badge(state: str):
    return format_html('<span class="sr-state sr-state-{}">{}</span>', state, state.replace("_", " "))


def format_duration(execution) -> str:
    """Run time (started to finished, or to now while it runs); "-" before it starts."""
    if execution.started_at is None:
        return "-"
    end = execution.finished_at or timezone.now()
    return format_ms(int((end - execution.started_at).total_seconds() * 1000))


def format_ms(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def responder_label(execution) -> str:
    if execution.agent_version_id:
        return f"{execution.agent_version.agent.name} v{execution.agent_version.number}"
    if execution.skill_version_id:
        return f"{execution.skill_version.skill.slug} v{execution.skill_version.number}"
    return "-"


def with_child_counts(queryset):
    """`child_count` per row as a correlated subquery on the parent index."""
    children = (
        Execution.objects.filter(parent=OuterRef("pk")).order_by().values("parent").annotate(n=Count("*")).values("n")
    )
    return queryset.annotate(child_count=Coalesce(Subquery(children), 0))


class LevelFilter(admin.SimpleListFilter):
    """Top-level executions by default; `all` adds batch items and sub-executions."""

    title = "level"
    parameter_name = "level"

    def lookups(self, request, model_admin):
        return [
            ("all", "All, with batch items and sub-executions"),
            ("children", "Only batch items and sub-executions"),
        ]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Top level",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        if self.value() == "all" or ParentFilter.parameter_name in request.GET or request.GET.get("q"):
            return queryset  # a search finds a child by its id too
        if self.value() == "children":
            return queryset.filter(parent__isnull=False)
        return queryset.filter(parent__isnull=True)


class ParentFilter(admin.SimpleListFilter):
    """The children of one execution (the count's link on its row); shown only while active."""

    title = "parent"
    parameter_name = "parent"

    def lookups(self, request, model_admin):
        value = request.GET.get(self.parameter_name)
        return [(value, f"children of …{short_id(value)}")] if value else []

    def queryset(self, request, queryset):
        if self.value():
            parsed = parse_prefixed_id(self.value(), "execution")
            return queryset.filter(parent_id=parsed) if parsed else queryset.none()
        return queryset


class PrincipalFilter(admin.SimpleListFilter):
    """The executions one principal started (the link on an execution's page); shown while active."""

    title = "started by"
    parameter_name = "principal"

    def lookups(self, request, model_admin):
        value = request.GET.get(self.parameter_name)
        return [(value, f"principal {value[:8]}…")] if value else []

    def queryset(self, request, queryset):
        if self.value():
            parsed = parse_prefixed_id(self.value(), "principal")
            return queryset.filter(principal_id=parsed) if parsed else queryset.none()
        return queryset


class FailureReasonFilter(admin.SimpleListFilter):
    """The failure reasons that occur (a DISTINCT over the failed rows, which the state index finds)."""

    title = "failure reason"
    parameter_name = "failure_reason"

    def lookups(self, request, model_admin):
        reasons = (
            Execution.objects.filter(state=ExecutionState.FAILED)
            .exclude(failure_reason="")
            .order_by("failure_reason")
            .values_list("failure_reason", flat=True)
            .distinct()
        )
        return [(reason, reason) for reason in reasons]

    def queryset(self, request, queryset):
        return queryset.filter(failure_reason=self.value()) if self.value() else queryset


def children_link(execution):
    """The count of its batch items / sub-executions, linking to them."""
    if not execution.child_count:
        return ""
    url = reverse(LIST_URL) + f"?parent={execution.id}"
    label = "items" if execution.source == "batch" else "subs"
    return format_html('<a class="sr-children" href="{}">{} {}</a>', url, execution.child_count, label)


class RelatedIdFilter(admin.SimpleListFilter):
    """A filter by a related row's id that applies whenever its parameter is given: Django's
    RelatedFieldListFilter drops its parameter (and shows every row) when there is only one choice."""

    lookup = ""  # the queryset lookup the id is matched against

    def choice_rows(self):
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(str(pk), label) for pk, label in self.choice_rows()]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        parsed = parse_prefixed_id(self.value(), self.parameter_name)
        return queryset.filter(**{self.lookup: parsed}) if parsed else queryset.none()


class AgentFilter(RelatedIdFilter):
    title = "agent"
    parameter_name = "agent"
    lookup = "agent_version__agent_id"

    def choice_rows(self):
        return [
            (a.id, f"{a.name} ({a.workspace.name})") for a in Agent.objects.select_related("workspace").order_by("name")
        ]


class SkillFilter(RelatedIdFilter):
    title = "skill"
    parameter_name = "skill"
    lookup = "skill_version__skill_id"

    def choice_rows(self):
        return [
            (s.id, f"{s.slug} ({s.workspace.name})") for s in Skill.objects.select_related("workspace").order_by("slug")
        ]


class CustomerFilter(RelatedIdFilter):
    title = "customer"
    parameter_name = "customer"
    lookup = "principal__customer_id"

    def choice_rows(self):
        return [(c.id, str(c)) for c in Customer.objects.order_by("external_id")[:200]]
