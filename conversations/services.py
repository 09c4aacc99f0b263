"""Writes of conversations and memory."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationState, MemoryFact, Message, MessageFeedback, MessageRole
from core import json as finite_json
from core.errors import ApiError


def create_or_resume_conversation(caller, agent) -> tuple[Conversation, bool]:
    """The caller's active conversation with the agent, or a new one (created=True). The partial
    unique index decides between concurrent requests: the loser reads the winner's row."""
    active = {
        "workspace": caller.workspace,
        "principal": caller.principal,
        "agent": agent,
        "state": ConversationState.ACTIVE,
    }
    existing = Conversation.objects.filter(**active).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            return Conversation.objects.create(**active), True
    except IntegrityError:
        return Conversation.objects.get(**active), False


def archive_conversation(conversation: Conversation) -> Conversation:
    Conversation.objects.filter(id=conversation.id, state=ConversationState.ACTIVE).update(
        state=ConversationState.ARCHIVED, archived_at=timezone.now()
    )
    conversation.refresh_from_db()
    return conversation


def set_feedback(message: Message, principal, value) -> MessageFeedback:
    if type(value) is not int or value not in (1, -1):
        raise ApiError(400, "invalid_feedback", "value must be 1 (thumbs up) or -1 (thumbs down).", field="value")
    feedback, _ = MessageFeedback.objects.update_or_create(
        message=message, principal=principal, defaults={"value": value}
    )
    return feedback


def record_exchange(
    *,
    workspace_id,
    execution_id,
    conversation_scope: str,
    state: str,
    message: str,
    tool_results: list[dict],
    outputs: dict | None,
    error: dict | None,
) -> None:
    """Called inside the execution's terminal transition (executions/terminal.py), so the exchange
    is stored exactly once and atomically: on completion the user message, the tool results (the
    execution's `tool_result` events' data, in order) and the answer; otherwise one system message
    (no half exchange)."""
    conversation = Conversation.objects.filter(
        id=str(conversation_scope).removeprefix("conversation:"), workspace_id=workspace_id
    ).first()
    if conversation is None:
        return
    if state != "completed":
        reason = (error or {}).get("message") or state
        Message.objects.create(
            conversation=conversation,
            role=MessageRole.SYSTEM,
            execution_id=execution_id,
            content=f"The execution {execution_id} ended {state}: {reason}",
        )
        return
    rows = [Message(conversation=conversation, role=MessageRole.USER, execution_id=execution_id, content=message)]
    for data in tool_results:
        rows.append(
            Message(
                conversation=conversation,
                role=MessageRole.TOOL,
                execution_id=execution_id,
                tool_call_id=data.get("tool_call_id", ""),
                tool_name=data.get("name", ""),
                content=finite_json.dumps({"outcome": data.get("outcome"), "result": data.get("result")}),
            )
        )
    rows.append(
        Message(
            conversation=conversation,
            role=MessageRole.ASSISTANT,
            execution_id=execution_id,
            content=(outputs or {}).get("text", ""),
        )
    )
    Message.objects.bulk_create(rows)


def remember(workspace_id, external_user_id: str, content: str, execution_id=None) -> MemoryFact:
    return MemoryFact.objects.create(
        workspace_id=workspace_id, external_user_id=external_user_id, content=content, execution_id=execution_id
    )


def forget(workspace_id, external_user_id: str, fact_id=None) -> int:
    """Delete one fact, or all of a user's (the right to be forgotten); returns how many."""
    facts = MemoryFact.objects.filter(workspace_id=workspace_id, external_user_id=external_user_id)
    if fact_id is not None:
        facts = facts.filter(id=fact_id)
    return facts.delete()[0]
