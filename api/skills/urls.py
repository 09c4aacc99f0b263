"""The skills API (spec/skills-*.txt): skill executions of a space, their artifacts, personal files."""

from django.urls import path

from api.skills import file_views, views

SKILL_EXECUTION = "v1/spaces/<str:space_id>/skills/executions/<str:execution_id>"

urlpatterns = [
    path("v1/spaces/<str:space_id>/skills/<str:slug>/executions", views.SkillExecutionStartView.as_view()),
    path("v1/spaces/<str:space_id>/skills/executions", views.SkillExecutionListView.as_view()),
    path(
        "v1/spaces/<str:space_id>/skills/executions/by-chat-tool-call/<str:tool_call_id>",
        views.ExecutionByChatToolCallView.as_view(),
    ),
    path(SKILL_EXECUTION, views.SkillExecutionDetailView.as_view()),
    path(f"{SKILL_EXECUTION}/cancel", views.SkillExecutionCancelView.as_view()),
    path(f"{SKILL_EXECUTION}/events", views.skill_execution_events),
    path("v1/artifacts/<uuid:artifact_id>/download", views.ArtifactDownloadView.as_view()),
    path("v1/files/", file_views.PersonalFilesView.as_view()),
    path("v1/files/<path:filename>", file_views.PersonalFileView.as_view()),
]
