"""POST/GET /webhooks, DELETE /webhooks/{id}: where a workspace's execution events are sent, signed
per Standard Webhooks (webhooks/). The signing secret is in the 201 only."""

from datetime import datetime
from typing import Annotated

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import BeforeValidator, Field, model_validator
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from api.http.schemas import Schema, data_envelope, invalid, parse, render
from core.permissions import IsWorkspaceKey
from webhooks import services
from webhooks.models import WebhookEndpoint, WebhookEvent
from webhooks.selectors import get_endpoint, workspace_endpoints
from webhooks.validation import DESCRIPTION_MAX_LENGTH, EVENTS, URL_MAX_LENGTH, url_problem

ERROR_RESPONSE = OpenApiResponse(description='{"error": {"code", "message", "field"}}')


def _url(value):
    if not isinstance(value, str):
        raise invalid("invalid_url", "url must be a string.", field="url")
    problem = url_problem(value)
    if problem:
        raise invalid("invalid_url", problem, field="url")
    return value


def _events(value):
    if not isinstance(value, list) or not value:
        raise invalid("invalid_events", f"events must be a non-empty list of: {', '.join(EVENTS)}.", field="events")
    for index, event in enumerate(value):
        if event not in EVENTS:
            raise invalid("invalid_events", f"Unknown event; one of: {', '.join(EVENTS)}.", field=f"events[{index}]")
    return value


def _description(value):
    if not isinstance(value, str) or len(value) > DESCRIPTION_MAX_LENGTH:
        raise invalid(
            "invalid_description", f"A string of at most {DESCRIPTION_MAX_LENGTH} characters.", field="description"
        )
    return value


class WebhookOutput(Schema):
    """An endpoint as listed: never its secret."""

    id: str = Field(examples=["webhook:5b1f..."])
    url: str
    events: list[WebhookEvent]
    description: str
    enabled: bool = Field(description="false once disabled after repeated failures (re-enabled in the admin)")
    disabled_reason: str | None
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_endpoint(cls, endpoint):
        if not isinstance(endpoint, WebhookEndpoint):
            return endpoint
        return {
            "id": endpoint.public_id,
            "url": endpoint.url,
            "events": endpoint.events,
            "description": endpoint.description,
            "enabled": endpoint.enabled,
            "disabled_reason": endpoint.disabled_reason or None,
            "created_at": endpoint.created_at,
        }


class NewWebhookOutput(WebhookOutput):
    secret: str = Field(
        description="`whsec_<base64>`: verify each delivery's `webhook-signature` with it. Shown in this answer only.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhooksView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = "Webhooks are managed with a workspace (wak_) key."

    class Input(Schema):
        url: Annotated[str, BeforeValidator(_url)] = Field(
            max_length=URL_MAX_LENGTH, examples=["https://example.com/hooks/skillrun"]
        )
        events: Annotated[list[WebhookEvent], BeforeValidator(_events)] = Field(
            min_length=1, max_length=len(EVENTS), examples=[["execution.completed", "execution.failed"]]
        )
        description: Annotated[str, BeforeValidator(_description)] = Field("", max_length=DESCRIPTION_MAX_LENGTH)

    class ListOutput(Schema):
        data: list[WebhookOutput]

    @extend_schema(
        operation_id="webhooks_create",
        tags=["webhooks"],
        summary="Register a webhook endpoint",
        description="`events`: a non-empty subset of `execution.completed`, `execution.failed`, "
        "`execution.cancelled`, `execution.suspended`. Each delivery is a POST of "
        '`{"type", "timestamp", "data": {"execution_id", "status", ...}}` signed per Standard Webhooks '
        "(`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the `secret` of this answer, which "
        "is never shown again. Retried with exponential backoff for 24 h; the `webhook-id` is the same on "
        "every attempt. Targets on non-public addresses are refused at delivery time. At most "
        "`WEBHOOK_MAX_ENDPOINTS` per workspace (409 `too_many_webhooks`).",
        request=Input,
        responses={
            201: data_envelope(NewWebhookOutput),
            400: ERROR_RESPONSE,
            403: ERROR_RESPONSE,
            409: ERROR_RESPONSE,
        },
    )
    def post(self, request):
        data = parse(self.Input, request.data if isinstance(request.data, dict) else {})
        created = services.check_create_endpoint(
            workspace=request.user.workspace,
            url=data.url,
            events=[str(event) for event in data.events],
            description=data.description,
        )
        body = {**render(WebhookOutput, created.endpoint), "secret": created.secret}
        return Response({"data": render(NewWebhookOutput, body)}, status=201)

    @extend_schema(
        operation_id="webhooks_list",
        tags=["webhooks"],
        summary="List the workspace's webhook endpoints",
        description=f"Oldest first (at most `WEBHOOK_MAX_ENDPOINTS`, {settings.WEBHOOK_MAX_ENDPOINTS} by default); "
        "without their secrets.",
        responses={200: ListOutput, 400: ERROR_RESPONSE, 403: ERROR_RESPONSE},
    )
    def get(self, request):
        return Response(render(self.ListOutput, {"data": list(workspace_endpoints(request.user.workspace))}))


class WebhookView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = WebhooksView.workspace_key_message

    @extend_schema(
        operation_id="webhooks_destroy",
        tags=["webhooks"],
        summary="Delete a webhook endpoint",
        description="Its pending deliveries are dropped with it.",
        responses={204: None, 403: ERROR_RESPONSE, 404: ERROR_RESPONSE},
    )
    def delete(self, request, webhook_id):
        services.do_delete_endpoint(endpoint=get_endpoint(request.user.workspace, webhook_id))
        return Response(status=204)
