from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from agents.views import PreviewCreditsView
from config.health import healthz
from conversations import views as conversation_views
from executions import agent_views, resume_views, skill_views, views
from executions import query_views
from files.views import AttachmentUploadView, download
from files.views import PersonalFilesView, PersonalFileView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    # Agents API (spec/agents-execute.txt)
    path("agents/<str:agent_id>/execute", agent_views.execute_sync),
    path("agents/<str:agent_id>/execute/stream", agent_views.execute_stream),
    path("agents/<str:agent_id>/execute/batch", agent_views.execute_batch),
    path("agents/<str:agent_id>/preview-credits", PreviewCreditsView.as_view()),
    path("attachments/upload", AttachmentUploadView.as_view()),
    path("my/conversations", conversation_views.ConversationsView.as_view()),
    path("my/conversations/<str:conversation_id>/archive", conversation_views.ConversationArchiveView.as_view()),
    path("my/conversations/<str:conversation_id>/messages", conversation_views.ConversationMessagesView.as_view()),
    path("my/conversations/<str:conversation_id>/messages/<str:message_id>/feedback",
         conversation_views.MessageFeedbackView.as_view()),
    path("users/<str:external_user_id>/memory", conversation_views.UserMemoryView.as_view()),
    path("users/<str:external_user_id>/memory/<uuid:fact_id>", conversation_views.UserMemoryFactView.as_view()),
    # Executions of every surface
    path("executions/<str:execution_id>", views.ExecutionDetailView.as_view()),
    path("executions/<str:execution_id>/cancel", views.ExecutionCancelView.as_view()),
    path("executions/<str:execution_id>/events", views.execution_events),
    path("executions/<str:execution_id>/stream-token", views.ExecutionStreamTokenView.as_view()),
    path("executions/<str:execution_id>/tool-result", resume_views.tool_result),
    path("executions/<str:execution_id>/approval", resume_views.approval),
    path("executions/<str:execution_id>/external-event", resume_views.external_event),
    path("files/download/<str:token>", download),
    # Skills API (spec/skills-*.txt)
    path("v1/spaces/<str:space_id>/skills/<str:slug>/executions", skill_views.SkillExecutionStartView.as_view()),
    path("v1/spaces/<str:space_id>/skills/executions", skill_views.SkillExecutionListView.as_view()),
    path("v1/spaces/<str:space_id>/skills/executions/by-chat-tool-call/<str:tool_call_id>",
         skill_views.ExecutionByChatToolCallView.as_view()),
    path("v1/spaces/<str:space_id>/skills/executions/<str:execution_id>",
         skill_views.SkillExecutionDetailView.as_view()),
    path("v1/spaces/<str:space_id>/skills/executions/<str:execution_id>/cancel",
         skill_views.SkillExecutionCancelView.as_view()),
    path("v1/spaces/<str:space_id>/skills/executions/<str:execution_id>/events", skill_views.skill_execution_events),
    path("v1/artifacts/<uuid:artifact_id>/download", skill_views.ArtifactDownloadView.as_view()),
    # Executions query API (spec/executions-api.txt); `nestings` before `<id>`
    path("api/v1/executions", query_views.ExecutionListView.as_view()),
    path("api/v1/executions/nestings", query_views.ExecutionNestingsView.as_view()),
    path("api/v1/executions/<str:id>", query_views.ExecutionView.as_view()),
    path("api/v1/executions/<str:id>/purge", query_views.ExecutionPurgeView.as_view()),
    # the caller's personal collection of files
    path("v1/files/", PersonalFilesView.as_view()),
    path("v1/files/<path:filename>", PersonalFileView.as_view()),
]
