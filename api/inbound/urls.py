"""Webhooks from other services (api/inbound/views.py)."""

from django.urls import path

from api.inbound import views

urlpatterns = [
    path("inbound/fal", views.FalWebhookView.as_view()),
    path("inbound/revenuecat/<str:workspace_id>", views.RevenueCatWebhookView.as_view()),
]
