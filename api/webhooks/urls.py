"""Outbound webhooks: a workspace's endpoints (workspace keys)."""

from django.urls import path

from api.webhooks import views

urlpatterns = [
    path("webhooks", views.WebhooksView.as_view()),
    path("webhooks/<str:webhook_id>", views.WebhookView.as_view()),
]
