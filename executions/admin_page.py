"""An execution's page in the operators' console (issue 13, item 2): the summary, the links, the
timeline, the inputs and outputs, the sub-execution tree and the live tail's configuration.

Its queries do not grow with the execution: one for the row (and its responder, principal,
customer, parent), one for the page of events, one per level of the tree, one each for the
artifacts, the media files and the child counts.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from executions import admin_actions
from executions.admin_list import LIST_URL, format_duration, format_ms, responder_label, short_id, state_badge
from executions.admin_timeline import pretty_json, timeline_page
from executions.models import TERMINAL_STATES, Execution, ExecutionSource

TREE_DEPTH = 5
LAST_PAGE = 10**9  # clamped to the last one
TREE_LEVEL_LIMIT = 200
CHANGE_URL = "admin:executions_execution_change"


def change_url(execution_id) -> str:
    return reverse(CHANGE_URL, args=[execution_id])


@dataclass
class TreeNode:
    execution: Execution
    children: list = field(default_factory=list)


def sub_execution_tree(execution) -> tuple[list[TreeNode], bool]:
    """The descendants, TREE_DEPTH levels deep, one query per level (TREE_LEVEL_LIMIT rows each);
    whether a level was cut."""
    roots: list[TreeNode] = []
    frontier = {execution.id: roots}
    cut = False
    for _ in range(TREE_DEPTH):
        if not frontier:
            break
        rows = list(
            Execution.objects.filter(parent_id__in=list(frontier))
            .select_related("agent_version__agent", "skill_version__skill")
            .order_by("created_at")[: TREE_LEVEL_LIMIT + 1]
        )
        cut = cut or len(rows) > TREE_LEVEL_LIMIT
        next_frontier = {}
        for child in rows[:TREE_LEVEL_LIMIT]:
            node = TreeNode(child)
            frontier[child.parent_id].append(node)
            next_frontier[child.id] = node.children
        frontier = next_frontier
    return roots, cut


def render_tree(nodes: list[TreeNode]):
    if not nodes:
        return ""
    return format_html(
        '<ul class="sr-tree">{}</ul>',
        format_html_join(
            "",
            '<li><a href="{}" title="{}">…{}</a> {} {} <span class="sr-muted">{} {}</span>{}</li>',
            (
                (
                    change_url(node.execution.id),
                    node.execution.id,
                    short_id(node.execution.id),
                    state_badge(node.execution.state),
                    responder_label(node.execution),
                    node.execution.source,
                    node.execution.batch_key,
                    render_tree(node.children),
                )
                for node in nodes
            ),
        ),
    )


def summary(execution) -> list[tuple[str, object]]:
    """The header's (label, value) pairs; values are text or safe HTML."""
    rows = [
        ("state", state_badge(execution.state)),
        ("responder", _responder_link(execution)),
        ("source", execution.source),
        ("started by", _principal(execution)),
        ("created", execution.created_at),
        ("started", execution.started_at or "-"),
        ("finished", execution.finished_at or "-"),
        ("duration", format_duration(execution)),
        ("queued for", _queued_for(execution)),
        (
            "usage",
            f"{execution.input_tokens} in / {execution.output_tokens} out tokens, {execution.iteration_count} turns",
        ),
        ("cost", f"${execution.cost_usd:.6f}"),
        ("credits", f"{execution.credits.normalize():f} charged, {execution.credits_held.normalize():f} held"),
        ("attempts", f"{execution.attempt} ({execution.recoveries} recovered)"),
    ]
    if execution.failure_reason or execution.error:
        message = (execution.error or {}).get("message", "")
        rows.append(("failure", format_html('<b class="sr-failure">{}</b> {}', execution.failure_reason, message)))
    if execution.is_purged:
        rows.append(("purged", execution.purged_at))
    return rows


def _responder_link(execution):
    if execution.agent_version_id:
        url = reverse("admin:agents_agent_change", args=[execution.agent_version.agent_id])
    elif execution.skill_version_id:
        url = reverse("admin:agents_skill_change", args=[execution.skill_version.skill_id])
    else:
        return "-"
    return format_html('<a href="{}">{}</a>', url, responder_label(execution))


def _principal(execution):
    principal = execution.principal
    if principal is None:
        return _operator(execution)
    url = reverse(LIST_URL) + f"?principal={principal.id}&level=all"
    customer = f", customer {principal.customer}" if principal.customer_id else ""
    return format_html('<a href="{}">{}</a>{}', url, principal, customer)


def _operator(execution):
    """Who ran it from the console ("run now" records it in the admin log), if anyone did."""
    entry = (
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Execution),
            object_id=str(execution.id),
            action_flag=ADDITION,
        )
        .select_related("user")
        .first()
    )
    return f"operator {entry.user} (run now)" if entry else "-"


def _queued_for(execution) -> str:
    if execution.started_at is None:
        return "-"
    return format_ms(int((execution.started_at - execution.created_at).total_seconds() * 1000))


def links(execution, child_count: int) -> list[tuple[str, object]]:
    """Parent, children, batch, conversation and trace, where the execution has them."""
    result = []
    if execution.parent_id:
        label = "batch" if execution.source == ExecutionSource.BATCH_ITEM else "parent"
        key = f" (item {execution.batch_key})" if execution.batch_key else ""
        result.append(
            (
                label,
                format_html(
                    '<a href="{}" title="{}">…{}</a>{}',
                    change_url(execution.parent_id),
                    execution.parent_id,
                    short_id(execution.parent_id),
                    key,
                ),
            )
        )
    if child_count:
        label = "items" if execution.source == ExecutionSource.BATCH else "sub-executions"
        url = reverse(LIST_URL) + f"?parent={execution.id}"
        result.append((label, format_html('<a href="{}">{} {}</a>', url, child_count, label)))
    scope = (execution.inputs or {}).get("conversation_scope") or ""
    if scope.startswith("conversation:"):
        url = reverse("admin:conversations_conversation_change", args=[scope.removeprefix("conversation:")])
        result.append(("conversation", format_html('<a href="{}">{}</a>', url, scope)))
    if execution.trace_id:
        host = settings.LANGFUSE_HOST.rstrip("/")
        trace = (
            format_html('<a href="{}/trace/{}">{}</a>', host, execution.trace_id, execution.trace_id)
            if host
            else execution.trace_id
        )
        result.append(("trace", trace))
    return result


def page_context(request, execution) -> dict:
    running = execution.state not in TERMINAL_STATES
    try:  # a running execution opens on its latest events, where the live tail goes on
        number = int(request.GET["tp"]) if "tp" in request.GET else (LAST_PAGE if running else 1)
    except ValueError:
        number = 1
    timeline = timeline_page(execution, number)
    child_count = Execution.objects.filter(parent_id=execution.id).aggregate(n=Count("id"))["n"]
    tree, tree_cut = sub_execution_tree(execution) if child_count else ([], False)
    actions = admin_actions.available_actions(execution, request.user)
    # the timeline's "fork from here" links, where the fork action is available (admin_actions.py)
    fork_base = (
        reverse("admin:executions_execution_action", args=[execution.pk, "fork"]) + "?from_seq="
        if any(action.name == "fork" for action in actions)
        else ""
    )
    live = running and timeline.is_last
    return {
        "execution": execution,
        "short_id": short_id(execution.id),
        "summary": summary(execution),
        "links": links(execution, child_count),
        "actions": actions,
        "fork_base": fork_base,
        "timeline": timeline,
        "inputs_json": pretty_json(execution.inputs),
        "outputs_json": pretty_json(execution.outputs) if execution.outputs is not None else "",
        "error_json": pretty_json(execution.error) if execution.error else "",
        "tree": render_tree(tree),
        "tree_cut": tree_cut,
        "child_count": child_count,
        "artifacts": list(execution.artifacts.all()),
        "live": live,
        "live_config": (
            {  # live_tail.js
                "tokenUrl": reverse("admin:executions_execution_stream_token", args=[execution.pk]),
                "eventsUrl": f"/executions/{execution.id}/events",
                "lastSeq": timeline.last_seq,
                "forkBase": fork_base,
                "serverOffsetMs": int((timezone.now() - execution.created_at).total_seconds() * 1000),
            }
        )
        if live
        else "",
    }
