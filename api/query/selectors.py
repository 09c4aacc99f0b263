"""The Executions query API (spec/executions-api.txt): its reads, from validated values.

Every read starts from `readable_executions(caller)`: workspace keys see the workspace's
executions, end-user keys their own; anything else is a 404. The JSON is api/query/schemas.py's.

- `list_executions`: newest first, optionally of some responders (agents' or skills' ids).
- `execution_tree`: an execution with its children, recursively, loaded with one recursive query
  whatever the tree's size (depth bounded by MAX_NESTING_DEPTH).
"""

import uuid
from dataclasses import dataclass, field

from django.db.models import Q
from django.db.models.expressions import RawSQL

from core.errors import ApiError, not_found
from core.ids import parse_prefixed_id
from executions.models import Execution
from executions.selectors import readable_executions

# Levels below the requested execution that a nesting returns (the runtime nests at most 5 deep,
# a batch adds one level).
MAX_NESTING_DEPTH = 10


@dataclass
class Node:
    """An execution with its children, oldest first (GET /api/v1/executions/nestings)."""

    execution: Execution
    children: list["Node"] = field(default_factory=list)


def query_executions(caller):
    """The caller's readable executions with what the JSON needs, in one query."""
    return readable_executions(caller).select_related("agent_version", "skill_version__skill")


def list_executions(caller, *, responder_ids: list[uuid.UUID]):
    """GET /api/v1/executions: newest first; of these agents or skills when any are given."""
    executions = query_executions(caller)
    if responder_ids:
        executions = executions.filter(
            Q(agent_version__agent_id__in=responder_ids) | Q(skill_version__skill_id__in=responder_ids)
        )
    return executions.order_by("-created_at", "-id")


# --- GET /api/v1/executions/{id} --------------------------------------------------------------------


def get_execution(caller, execution_id: str) -> Execution:
    parsed = parse_prefixed_id(execution_id, "execution")
    execution = query_executions(caller).filter(id=parsed).first() if parsed else None
    if execution is None:
        raise not_found("execution")
    return execution


# --- GET /api/v1/executions/nestings ----------------------------------------------------------------


def _tree_ids_sql() -> str:
    table = Execution._meta.db_table
    return (
        f"WITH RECURSIVE tree (id, depth) AS ("
        f'  SELECT id, 0 FROM "{table}" WHERE id = %s'
        f"  UNION ALL"
        f'  SELECT child.id, tree.depth + 1 FROM "{table}" child JOIN tree ON child.parent_id = tree.id'
        f"  WHERE tree.depth < %s"
        f") SELECT id FROM tree"
    )


def execution_tree(caller, root_id: uuid.UUID) -> Node:
    """The execution and its descendants (up to MAX_NESTING_DEPTH levels), `children` oldest
    first. One query, whatever the size of the tree; rows the caller may not read are left out
    with their subtrees."""
    rows = list(
        query_executions(caller)
        .filter(id__in=RawSQL(_tree_ids_sql(), (root_id, MAX_NESTING_DEPTH)))
        .order_by("created_at", "id")
    )
    nodes = {row.id: Node(row) for row in rows}
    root = nodes.get(root_id)
    if root is None:
        raise not_found("execution")
    for row in rows:  # oldest first, so every children list is ordered
        if row.id != root_id and row.parent_id in nodes:
            nodes[row.parent_id].children.append(nodes[row.id])
    return root


def _chat_message_ids(value: str) -> list[str]:
    """How a chat message id may be stored: as given, and for an execution's id with and without
    its `execution:` prefix (chat-dispatched skills record the agent execution's public id)."""
    candidates = {value}
    parsed = parse_prefixed_id(value, "execution")
    if parsed is not None:
        candidates |= {str(parsed), f"execution:{parsed}"}
    return sorted(candidates)


def nesting_root_for_chat_message(caller, chat_message_id: str) -> uuid.UUID:
    """The execution that holds every execution recorded for a chat message: the execution itself
    when one was; when several were (an agent turn that called several skills), the parent they
    share, whose children they are."""
    matches = list(
        readable_executions(caller)
        .filter(chat_message_id__in=_chat_message_ids(chat_message_id))
        .values_list("id", "parent_id")
    )
    if not matches:
        raise not_found("execution")
    ids = {execution_id for execution_id, _ in matches}
    top_level = [(execution_id, parent_id) for execution_id, parent_id in matches if parent_id not in ids]
    if len(top_level) == 1:
        return top_level[0][0]
    parents = {parent_id for _, parent_id in top_level}
    if len(parents) == 1 and None not in parents:
        return parents.pop()
    raise ApiError(
        409,
        "ambiguous_chat_message",
        "Several unrelated executions were recorded for this chat message; query them by executionId.",
        field="chatMessageId",
    )
