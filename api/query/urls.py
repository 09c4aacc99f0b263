"""The executions query API (spec/executions-api.txt); `nestings` before `<id>`."""

from django.urls import path

from api.query import views

urlpatterns = [
    path("api/v1/executions", views.ExecutionListView.as_view()),
    path("api/v1/executions/nestings", views.ExecutionNestingsView.as_view()),
    path("api/v1/executions/<str:id>", views.ExecutionView.as_view()),
    path("api/v1/executions/<str:id>/purge", views.ExecutionPurgeView.as_view()),
]
