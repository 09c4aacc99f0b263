"""The Executions query API (spec/executions-api.txt): reads and their camelCase JSON.

Every read starts from `readable_executions(caller)`: workspace keys see the workspace's
executions, end-user keys their own; anything else is a 404.

- `execution_json`: the documented execution object (`createdAt`, `id`, `updatedAt`, `creditsUsed`,
  `detail`, `endedAt`, `isAgentic`, `isPurged`, `parentId`, `responderId`, `startedAt`, `status`,
  `workspaceId`); `detail` is one of three variants told apart by `detail.type`: `agent`, `skill`,
  `batch_item`.
- `list_page`: newest first, `pageNumber` (>= 1) / `pageSize` (1-100), `responderIds` (agents' or
  skills' ids); values out of range are a 400, never clamped.
- `nesting`: an execution with its children, recursively, loaded with one recursive query
  whatever the tree's size (depth bounded by MAX_NESTING_DEPTH).
"""

import math
import uuid
from dataclasses import dataclass

from django.db.models import Q
from django.db.models.expressions import RawSQL

from core.errors import ApiError, not_found
from core.ids import parse_prefixed_id
from core.query_params import int_query_param
from core.timestamps import iso_utc
from executions.models import Execution, ExecutionSource, ExecutionState
from executions.selectors import readable_executions

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_RESPONDER_IDS = 100
# Levels below the requested execution that a nesting returns (the runtime nests at most 5 deep,
# a batch adds one level).
MAX_NESTING_DEPTH = 10
MAX_CHAT_MESSAGE_ID_LENGTH = 128

STATUSES = list(ExecutionState.values)


class DetailType:
    AGENT = "agent"
    SKILL = "skill"
    BATCH_ITEM = "batch_item"


def query_executions(caller):
    """The caller's readable executions with what the JSON needs, in one query."""
    return readable_executions(caller).select_related("agent_version", "skill_version__skill")


# --- JSON --------------------------------------------------------------------------------------------


def _usage(execution: Execution) -> dict:
    return {
        "inputTokens": execution.input_tokens,
        "outputTokens": execution.output_tokens,
        "totalTokens": execution.input_tokens + execution.output_tokens,
        "costUsd": float(execution.cost_usd),
        "wallclockMs": execution.wallclock_ms,
        "iterationCount": execution.iteration_count,
    }


def responder_id(execution: Execution) -> str:
    """The agent's or the skill's id ("" for a row with neither, which the API never creates)."""
    if execution.agent_version_id:
        return str(execution.agent_version.agent_id)
    if execution.skill_version_id:
        return str(execution.skill_version.skill_id)
    return ""


def detail_json(execution: Execution) -> dict:
    purged = execution.is_purged
    common = {
        "source": execution.source,
        "inputs": None if purged else execution.inputs,
        "outputs": None if purged else execution.outputs,
        "error": None if purged else execution.error,
        "failureReason": execution.failure_reason or None,
        "usage": _usage(execution),
        "chatThreadId": execution.chat_thread_id or None,
        "chatMessageId": execution.chat_message_id or None,
        "chatToolCallId": execution.chat_tool_call_id or None,
    }
    if execution.skill_version_id:
        version = execution.skill_version
        return {
            "type": DetailType.SKILL,
            "skillId": str(version.skill_id),
            "skillSlug": version.skill.slug,
            "skillVersionId": str(version.id),
            "versionNumber": version.number,
            **common,
        }
    version = execution.agent_version
    agent = {
        "agentId": str(version.agent_id) if version else None,
        "agentVersionId": str(version.id) if version else None,
        "versionNumber": version.number if version else None,
    }
    if execution.source == ExecutionSource.BATCH_ITEM:
        return {
            "type": DetailType.BATCH_ITEM,
            **agent,
            "batchId": str(execution.parent_id) if execution.parent_id else None,
            "key": execution.batch_key,
            **common,
        }
    return {"type": DetailType.AGENT, **agent, **common}


def execution_json(execution: Execution) -> dict:
    return {
        "createdAt": iso_utc(execution.created_at),
        "id": str(execution.id),
        "updatedAt": iso_utc(execution.updated_at),
        "creditsUsed": float(execution.credits),
        "detail": detail_json(execution),
        "endedAt": iso_utc(execution.finished_at),
        "isAgentic": execution.agent_version_id is not None,
        "isPurged": execution.is_purged,
        "parentId": str(execution.parent_id) if execution.parent_id else None,
        "responderId": responder_id(execution),
        # documented as never null: a queued execution that has not started yet reports its creation
        "startedAt": iso_utc(execution.started_at or execution.created_at),
        "status": execution.state,
        "workspaceId": str(execution.workspace_id),
    }


# --- GET /api/v1/executions -------------------------------------------------------------------------


@dataclass
class Page:
    items: list
    page_number: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.page_size) if self.total else 0


def parse_responder_ids(params) -> list[uuid.UUID]:
    """`responderIds=a&responderIds=b`, `responderIds=a,b` or `responderIds[]=a`: agents' or skills' ids."""
    raw = [
        part.strip()
        for value in params.getlist("responderIds") + params.getlist("responderIds[]")
        for part in value.split(",")
    ]
    raw = [part for part in raw if part]
    if len(raw) > MAX_RESPONDER_IDS:
        raise ApiError(400, "invalid_responder_ids", f"At most {MAX_RESPONDER_IDS} responderIds.", field="responderIds")
    ids = []
    for value in raw:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            raise ApiError(
                400,
                "invalid_responder_ids",
                f"responderIds must be UUIDs; {value[:64]!r} is not.",
                field="responderIds",
            ) from None
    return ids


def list_page(caller, params) -> Page:
    page_number = int_query_param(params, "pageNumber", 1, 1)
    page_size = int_query_param(params, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    responder_ids = parse_responder_ids(params)
    executions = query_executions(caller)
    if responder_ids:
        executions = executions.filter(
            Q(agent_version__agent_id__in=responder_ids) | Q(skill_version__skill_id__in=responder_ids)
        )
    total = executions.count()
    offset = (page_number - 1) * page_size
    items = list(executions.order_by("-created_at", "-id")[offset : offset + page_size]) if offset < total else []
    return Page(items=items, page_number=page_number, page_size=page_size, total=total)


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


def execution_tree(caller, root_id: uuid.UUID) -> dict:
    """The execution and its descendants (up to MAX_NESTING_DEPTH levels), as nested JSON with
    `children` (oldest first). One query, whatever the size of the tree; rows the caller may not
    read are left out with their subtrees."""
    rows = list(
        query_executions(caller)
        .filter(id__in=RawSQL(_tree_ids_sql(), (root_id, MAX_NESTING_DEPTH)))
        .order_by("created_at", "id")
    )
    nodes = {row.id: {**execution_json(row), "children": []} for row in rows}
    root = nodes.get(root_id)
    if root is None:
        raise not_found("execution")
    for row in rows:  # oldest first, so every children list is ordered
        if row.id != root_id and row.parent_id in nodes:
            nodes[row.parent_id]["children"].append(nodes[row.id])
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


def nesting(caller, params) -> dict:
    execution_id = params.get("executionId", "").strip()
    chat_message_id = params.get("chatMessageId", "").strip()
    if execution_id and chat_message_id:
        raise ApiError(
            400, "conflicting_parameters", "Give executionId or chatMessageId, not both.", field="chatMessageId"
        )
    if execution_id:
        parsed = parse_prefixed_id(execution_id, "execution")
        if parsed is None:
            raise ApiError(400, "invalid_execution_id", "executionId must be a UUID.", field="executionId")
        return execution_tree(caller, parsed)
    if chat_message_id:
        if len(chat_message_id) > MAX_CHAT_MESSAGE_ID_LENGTH:
            raise ApiError(
                400,
                "invalid_chat_message_id",
                f"chatMessageId is at most {MAX_CHAT_MESSAGE_ID_LENGTH} characters.",
                field="chatMessageId",
            )
        return execution_tree(caller, nesting_root_for_chat_message(caller, chat_message_id))
    raise ApiError(
        400, "execution_id_or_chat_message_id_required", "Give executionId or chatMessageId.", field="executionId"
    )
