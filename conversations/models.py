"""Conversations of an end user with an agent, their messages and feedback, and per-user memory."""

import uuid

from django.db import models

from accounts.models import Principal, Workspace
from agents.models import Agent


class ConversationState(models.TextChoices):
    ACTIVE = "active"
    ARCHIVED = "archived"


class Conversation(models.Model):
    """At most one active conversation per principal and agent (a partial unique index)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="conversations")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="conversations")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="conversations")
    state = models.CharField(max_length=16, choices=ConversationState.choices, default=ConversationState.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["principal", "agent"],
                condition=models.Q(state="active"),
                name="one_active_conversation_per_principal_and_agent",
            )
        ]

    def __str__(self):
        return f"conversation:{self.id}"

    @property
    def public_id(self) -> str:
        return f"conversation:{self.id}"


class MessageRole(models.TextChoices):
    USER = "user"  # the end user; replayed to the model
    ASSISTANT = "assistant"  # the agent's answer; replayed
    TOOL = "tool"  # a tool's result; replayed
    SYSTEM = "system"  # platform notes (failures, handoffs); stored, never replayed


REPLAYED_ROLES = (MessageRole.USER, MessageRole.ASSISTANT, MessageRole.TOOL)


class Message(models.Model):
    id = models.BigAutoField(primary_key=True)  # also the order of the conversation
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    content = models.TextField()
    tool_call_id = models.CharField(max_length=128, blank=True, default="")
    tool_name = models.CharField(max_length=64, blank=True, default="")
    execution_id = models.UUIDField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.role}: {self.content[:50]}"

    @property
    def public_id(self) -> str:
        return f"message:{self.id}"


class MessageFeedback(models.Model):
    """One thumbs up (1) or down (-1) per principal and message; posting again changes it."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="+")
    value = models.SmallIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "principal"], name="one_feedback_per_principal_and_message"),
            models.CheckConstraint(condition=models.Q(value__in=[1, -1]), name="feedback_value_is_plus_or_minus_one"),
        ]

    def __str__(self):
        return f"{self.value:+d} on {self.message_id}"


class MemoryFact(models.Model):
    """Something known about one of the workspace's users (`external_user_id`), injected into the
    context of that user's executions and kept up to date by the agent's memory tool."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memory_facts")
    external_user_id = models.CharField(max_length=255, db_index=True)
    content = models.TextField()
    execution_id = models.UUIDField(null=True, blank=True, help_text="The execution that remembered it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return self.content[:80]
