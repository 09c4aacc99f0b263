"""A workspace's schedules (workspace keys): agents and skills started on a cron expression."""

from django.urls import path

from api.schedules import views

urlpatterns = [
    path("schedules", views.SchedulesView.as_view()),
    path("schedules/<str:schedule_id>", views.ScheduleView.as_view()),
]
