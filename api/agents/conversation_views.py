"""Conversations (spec/agents-execute.txt, "Conversations") and per-user memory."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import BeforeValidator, ConfigDict, Field, model_validator
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.selectors import get_live_agent
from api.http.schemas import Schema, data_envelope, invalid, parse, parse_query, render
from conversations import services
from conversations.models import Conversation, ConversationState, Message, MessageRole
from conversations.selectors import get_conversation, memory_facts
from core.errors import not_found
from core.pagination import LimitOffsetPagination
from core.permissions import IsWorkspaceKey
from core.query_params import natural_number

MAX_CONVERSATIONS = 200


class ConversationOutput(Schema):
    id: str = Field(examples=["conversation:0f8c..."])
    agent_id: str = Field(examples=["agent:0bve9rxq"])
    state: ConversationState
    created_at: datetime
    archived_at: datetime | None

    @model_validator(mode="before")
    @classmethod
    def _from_conversation(cls, conversation):
        if not isinstance(conversation, Conversation):
            return conversation
        return {
            "id": conversation.public_id,
            "agent_id": f"agent:{conversation.agent_id}",
            "state": conversation.state,
            "created_at": conversation.created_at,
            "archived_at": conversation.archived_at,
        }


class MessageOutput(Schema):
    id: str = Field(examples=["message:42"])
    role: MessageRole
    content: str
    created_at: datetime
    execution_id: str | None
    tool_call_id: str | None = Field(None, description="`tool` messages only")
    tool_name: str | None = Field(None, description="`tool` messages only")

    @model_validator(mode="before")
    @classmethod
    def _from_message(cls, message):
        if not isinstance(message, Message):
            return message
        data = {
            "id": message.public_id,
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at,
            "execution_id": f"execution:{message.execution_id}" if message.execution_id else None,
        }
        if message.role == MessageRole.TOOL:
            data.update(tool_call_id=message.tool_call_id, tool_name=message.tool_name)
        return data


ConversationEnvelope = data_envelope(ConversationOutput)


def _agent_id(value):
    if not isinstance(value, str) or not value:
        raise invalid("agent_id_required", "agent_id is required.")
    return value


class ConversationsView(APIView):
    class ListInput(Schema):
        state: ConversationState | None = None

    class ListOutput(Schema):
        data: list[ConversationOutput] = Field(description=f"Newest first, at most {MAX_CONVERSATIONS}")

    Output = ConversationOutput

    class Input(Schema):
        agent_id: Annotated[str, BeforeValidator(_agent_id)] = Field(examples=["agent:0bve9rxq"])

    @extend_schema(
        summary="List your conversations",
        description="Newest first; `?state=active|archived`.",
        parameters=[ListInput],
        responses={200: ListOutput},
    )
    def get(self, request):
        state = parse_query(self.ListInput, request.query_params).state
        conversations = request.user.principal.conversations.filter(workspace=request.user.workspace)
        if state is not None:
            conversations = conversations.filter(state=state)
        return Response(
            render(self.ListOutput, {"data": list(conversations.order_by("-created_at")[:MAX_CONVERSATIONS])})
        )

    @extend_schema(
        summary="Create or resume a conversation",
        description="201 with a new conversation, or 200 with your active conversation for this agent (one per "
        "end user and agent, even under concurrent requests). Archive it to start a fresh one.",
        request=Input,
        responses={
            201: ConversationEnvelope,
            200: ConversationEnvelope,
            409: OpenApiResponse(description="`agent_not_published`"),
        },
    )
    def post(self, request):
        data = parse(self.Input, request.data if isinstance(request.data, dict) else {})
        conversation, created = services.create_or_resume_conversation(
            request.user, get_live_agent(request.user.workspace, data.agent_id)
        )
        return Response({"data": render(self.Output, conversation)}, status=201 if created else 200)


class ConversationArchiveView(APIView):
    Output = ConversationOutput

    @extend_schema(
        summary="Archive a conversation",
        request=None,
        description="It can no longer be executed against (409 `conversation_archived`); the next "
        "POST /my/conversations starts a fresh one.",
        responses={200: ConversationEnvelope},
    )
    def post(self, request, conversation_id):
        conversation = services.archive_conversation(get_conversation(request.user, conversation_id))
        return Response({"data": render(self.Output, conversation)})


class ConversationMessagesView(APIView):
    pagination_class = LimitOffsetPagination
    Output = MessageOutput

    @extend_schema(
        operation_id="my_conversations_messages_retrieve",
        summary="A conversation's messages",
        description="Oldest first; `limit` 1-200 (default 50), `offset`. Roles: user, assistant, tool "
        "(replayed to the model) and system (platform notes, never replayed).",
        responses={200: Output},
    )
    def get(self, request, conversation_id):
        conversation = get_conversation(request.user, conversation_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(conversation.messages.order_by("id"), request, self)
        return paginator.get_paginated_response([render(self.Output, message) for message in page])


class MessageFeedbackView(APIView):
    class Input(Schema):
        value: Any = Field(
            None, json_schema_extra={"type": "integer", "enum": [1, -1]}, description="1 (thumbs up) or -1"
        )

    class Output(Schema):
        message_id: str
        value: int

    @extend_schema(
        summary="Give feedback on a message",
        description="`value`: 1 (thumbs up) or -1 (thumbs down); one per caller and message, posting again changes it.",
        request=Input,
        responses={200: data_envelope(Output)},
    )
    def post(self, request, conversation_id, message_id):
        conversation = get_conversation(request.user, conversation_id)
        number = natural_number(message_id.removeprefix("message:"))
        message = Message.objects.filter(conversation=conversation, id=number).first() if number is not None else None
        if message is None:
            raise not_found("message")
        data = parse(self.Input, request.data if isinstance(request.data, dict) else {})
        feedback = services.set_feedback(message, request.user.principal, data.value)  # checks the value
        return Response({"data": render(self.Output, {"message_id": message.public_id, "value": feedback.value})})


class MemoryFactOutput(Schema):
    id: uuid.UUID
    content: str
    created_at: datetime

    model_config = ConfigDict(from_attributes=True)  # rendered from a MemoryFact row


class UserMemoryView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = "Memory is managed with a workspace (wak_) key."

    class Output(Schema):
        data: list[MemoryFactOutput]

    class ForgetOutput(Schema):
        deleted: int

    @extend_schema(
        summary="What the agents remember about a user",
        description="The facts stored for an `external_user_id` (workspace keys).",
        responses={200: Output},
    )
    def get(self, request, external_user_id):
        facts = memory_facts(request.user.workspace.id, external_user_id)
        return Response(render(self.Output, {"data": list(facts)}))

    @extend_schema(
        operation_id="users_memory_forget_all",
        summary="Forget a user",
        description="Deletes every fact about the user (the right to be forgotten).",
        responses={200: data_envelope(ForgetOutput)},
    )
    def delete(self, request, external_user_id):
        deleted = services.forget(request.user.workspace.id, external_user_id)
        return Response({"data": render(self.ForgetOutput, {"deleted": deleted})})


class UserMemoryFactView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = UserMemoryView.workspace_key_message

    @extend_schema(operation_id="users_memory_forget_fact", summary="Forget one fact", responses={204: None})
    def delete(self, request, external_user_id, fact_id):
        if not services.forget(request.user.workspace.id, external_user_id, fact_id):
            raise not_found("fact")
        return Response(status=204)
