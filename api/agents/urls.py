"""The agents API (spec/agents-execute.txt): execute, resume, conversations, memory, attachments,
and the execution routes every caller of an agent uses."""

from django.urls import path

from api.agents import (
    agent_views,
    attachment_views,
    conversation_views,
    credits_views,
    execute_views,
    execution_views,
    resume_views,
)

urlpatterns = [
    path("agents", agent_views.AgentsView.as_view()),
    path("agents/<str:agent_id>/execute", execute_views.execute_sync),
    path("agents/<str:agent_id>/execute/stream", execute_views.execute_stream),
    path("agents/<str:agent_id>/execute/batch", execute_views.execute_batch),
    path("agents/<str:agent_id>/preview-credits", credits_views.PreviewCreditsView.as_view()),
    path("attachments/upload", attachment_views.AttachmentUploadView.as_view()),
    path("my/conversations", conversation_views.ConversationsView.as_view()),
    path(
        "my/conversations/<str:conversation_id>/archive",
        conversation_views.ConversationArchiveView.as_view(),
    ),
    path(
        "my/conversations/<str:conversation_id>/messages",
        conversation_views.ConversationMessagesView.as_view(),
    ),
    path(
        "my/conversations/<str:conversation_id>/messages/<str:message_id>/feedback",
        conversation_views.MessageFeedbackView.as_view(),
    ),
    path("users/<str:external_user_id>/memory", conversation_views.UserMemoryView.as_view()),
    path("users/<str:external_user_id>/memory/<uuid:fact_id>", conversation_views.UserMemoryFactView.as_view()),
    path("executions/<str:execution_id>", execution_views.ExecutionDetailView.as_view()),
    path("executions/<str:execution_id>/cancel", execution_views.ExecutionCancelView.as_view()),
    path("executions/<str:execution_id>/events", execution_views.execution_events),
    path("executions/<str:execution_id>/fork", execution_views.ExecutionForkView.as_view()),
    path("executions/<str:execution_id>/stream-token", execution_views.ExecutionStreamTokenView.as_view()),
    path("executions/<str:execution_id>/tool-result", resume_views.tool_result),
    path("executions/<str:execution_id>/approval", resume_views.approval),
    path("executions/<str:execution_id>/external-event", resume_views.external_event),
]
