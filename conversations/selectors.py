"""Reads of conversations and memory, scoped to the caller."""

from django.conf import settings

from conversations.models import REPLAYED_ROLES, Conversation, ConversationState, MemoryFact, Message
from core.errors import ApiError, not_found
from core.ids import parse_prefixed_id


def get_conversation(caller, conversation_id: str) -> Conversation:
    """The caller's own conversation; anyone else's is 404."""
    parsed = parse_prefixed_id(conversation_id, "conversation")
    conversation = (
        Conversation.objects.filter(id=parsed, workspace=caller.workspace, principal=caller.principal)
        .select_related("agent")
        .first()
        if parsed
        else None
    )
    if conversation is None:
        raise not_found("conversation")
    return conversation


def conversation_for_execution(caller, agent, scope: str) -> Conversation:
    """`conversation_scope` of an execute request: the caller's active conversation with this agent."""
    conversation = get_conversation(caller, scope)
    if conversation.agent_id != agent.id:
        raise ApiError(
            422,
            "conversation_agent_mismatch",
            "This conversation belongs to another agent.",
            field="conversation_scope",
        )
    if conversation.state == ConversationState.ARCHIVED:
        raise ApiError(
            409,
            "conversation_archived",
            "This conversation is archived; start a new one with POST /my/conversations.",
            field="conversation_scope",
        )
    return conversation


def history_for_model(conversation_id) -> list[dict]:
    """The messages replayed to the model, oldest first: user, assistant and tool messages (never
    system ones), trimmed from the oldest end to the context budget: at most
    CONVERSATION_HISTORY_MAX_MESSAGES messages and CONVERSATION_HISTORY_MAX_CHARS characters, and a
    replay never starts with a tool message (its call would be missing)."""
    newest_first = Message.objects.filter(conversation_id=conversation_id, role__in=REPLAYED_ROLES).order_by("-id")
    kept, size = [], 0
    for message in newest_first[: settings.CONVERSATION_HISTORY_MAX_MESSAGES]:
        size += len(message.content)
        if size > settings.CONVERSATION_HISTORY_MAX_CHARS:
            break
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role == "tool":
        kept.pop(0)
    return [
        {
            "role": m.role,
            "content": m.content,
            **({"tool_call_id": m.tool_call_id, "name": m.tool_name} if m.role == "tool" else {}),
        }
        for m in kept
    ]


def memory_facts(workspace_id, external_user_id: str):
    return MemoryFact.objects.filter(workspace_id=workspace_id, external_user_id=external_user_id)
