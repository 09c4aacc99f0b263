"""Conversations (spec/agents-execute.txt, "Conversations") and per-user memory."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKeyKind
from agents.selectors import get_live_agent
from conversations import services
from conversations.models import ConversationState, Message
from conversations.selectors import get_conversation, memory_facts
from core.errors import ApiError, not_found
from core.query_params import int_query_param
from core.timestamps import iso_utc


def conversation_data(conversation) -> dict:
    return {
        "id": conversation.public_id,
        "agent_id": f"agent:{conversation.agent_id}",
        "state": conversation.state,
        "created_at": iso_utc(conversation.created_at),
        "archived_at": iso_utc(conversation.archived_at),
    }


def message_data(message) -> dict:
    data = {
        "id": message.public_id,
        "role": message.role,
        "content": message.content,
        "created_at": iso_utc(message.created_at),
        "execution_id": f"execution:{message.execution_id}" if message.execution_id else None,
    }
    if message.role == "tool":
        data.update(tool_call_id=message.tool_call_id, tool_name=message.tool_name)
    return data


class ConversationsView(APIView):
    @extend_schema(
        summary="List your conversations",
        description="Newest first; `?state=active|archived`.",
        responses={200: OpenApiResponse(description='{"data": [conversation]}')},
    )
    def get(self, request):
        conversations = request.user.principal.conversations.filter(workspace=request.user.workspace)
        state = request.query_params.get("state")
        if state is not None:
            if state not in ConversationState.values:
                raise ApiError(400, "invalid_state", "state must be active or archived.", field="state")
            conversations = conversations.filter(state=state)
        return Response({"data": [conversation_data(c) for c in conversations.order_by("-created_at")[:200]]})

    @extend_schema(
        summary="Create or resume a conversation",
        description="201 with a new conversation, or 200 with your active conversation for this agent (one per "
        "end user and agent, even under concurrent requests). Archive it to start a fresh one.",
        request={
            "application/json": {
                "type": "object",
                "required": ["agent_id"],
                "properties": {"agent_id": {"type": "string", "example": "agent:0bve9rxq"}},
            }
        },
        responses={
            201: OpenApiResponse(description='{"data": conversation}'),
            200: OpenApiResponse(description='{"data": conversation}'),
        },
    )
    def post(self, request):
        agent_id = request.data.get("agent_id") if isinstance(request.data, dict) else None
        if not isinstance(agent_id, str) or not agent_id:
            raise ApiError(400, "agent_id_required", "agent_id is required.", field="agent_id")
        conversation, created = services.create_or_resume_conversation(
            request.user, get_live_agent(request.user.workspace, agent_id)
        )
        return Response({"data": conversation_data(conversation)}, status=201 if created else 200)


class ConversationArchiveView(APIView):
    @extend_schema(
        summary="Archive a conversation",
        request=None,
        description="It can no longer be executed against (409 `conversation_archived`); the next "
        "POST /my/conversations starts a fresh one.",
        responses={200: OpenApiResponse(description='{"data": conversation}')},
    )
    def post(self, request, conversation_id):
        conversation = services.archive_conversation(get_conversation(request.user, conversation_id))
        return Response({"data": conversation_data(conversation)})


class ConversationMessagesView(APIView):
    @extend_schema(
        summary="A conversation's messages",
        description="Oldest first; `limit` 1-200 (default 50), `offset`. Roles: user, assistant, tool "
        "(replayed to the model) and system (platform notes, never replayed).",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: OpenApiResponse(description='{"data": [message], "pagination": {...}}')},
    )
    def get(self, request, conversation_id):
        conversation = get_conversation(request.user, conversation_id)
        limit = int_query_param(request.query_params, "limit", 50, 1, 200)
        offset = int_query_param(request.query_params, "offset", 0, 0)
        messages = conversation.messages.order_by("id")
        return Response(
            {
                "data": [message_data(m) for m in messages[offset : offset + limit]],
                "pagination": {"limit": limit, "offset": offset, "total": messages.count()},
            }
        )


class MessageFeedbackView(APIView):
    @extend_schema(
        summary="Give feedback on a message",
        description="`value`: 1 (thumbs up) or -1 (thumbs down); one per caller and message, posting again changes it.",
        request={
            "application/json": {
                "type": "object",
                "required": ["value"],
                "properties": {"value": {"type": "integer", "enum": [1, -1]}},
            }
        },
        responses={200: OpenApiResponse(description='{"data": {"message_id", "value"}}')},
    )
    def post(self, request, conversation_id, message_id):
        conversation = get_conversation(request.user, conversation_id)
        number = message_id.removeprefix("message:")
        message = Message.objects.filter(conversation=conversation, id=number).first() if number.isdigit() else None
        if message is None:
            raise not_found("message")
        value = request.data.get("value") if isinstance(request.data, dict) else None
        feedback = services.set_feedback(message, request.user.principal, value)
        return Response({"data": {"message_id": message.public_id, "value": feedback.value}})


def _workspace_key(request):
    if request.user.api_key.kind != ApiKeyKind.WORKSPACE:
        raise ApiError(403, "forbidden", "Memory is managed with a workspace (wak_) key.")


class UserMemoryView(APIView):
    @extend_schema(
        summary="What the agents remember about a user",
        description="The facts stored for an `external_user_id` (workspace keys).",
        responses={200: OpenApiResponse(description='{"data": [{"id", "content", "created_at"}]}')},
    )
    def get(self, request, external_user_id):
        _workspace_key(request)
        facts = memory_facts(request.user.workspace.id, external_user_id)
        return Response(
            {"data": [{"id": str(f.id), "content": f.content, "created_at": iso_utc(f.created_at)} for f in facts]}
        )

    @extend_schema(
        operation_id="users_memory_forget_all",
        summary="Forget a user",
        description="Deletes every fact about the user (the right to be forgotten).",
        responses={200: OpenApiResponse(description='{"data": {"deleted": n}}')},
    )
    def delete(self, request, external_user_id):
        _workspace_key(request)
        return Response({"data": {"deleted": services.forget(request.user.workspace.id, external_user_id)}})


class UserMemoryFactView(APIView):
    @extend_schema(operation_id="users_memory_forget_fact", summary="Forget one fact", responses={204: None})
    def delete(self, request, external_user_id, fact_id):
        _workspace_key(request)
        if not services.forget(request.user.workspace.id, external_user_id, fact_id):
            raise not_found("fact")
        return Response(status=204)
