"""Webhooks other services send us (no API key: each proves itself its own way):

    POST /inbound/fal                           Fal.ai's queue results, ED25519-signed (fal_signature.py)
    POST /inbound/revenuecat/{workspace_id}     RevenueCat's purchase events, with the workspace's
                                                configured Authorization header value

Under /inbound/, apart from the workspace's own outbound `/webhooks` routes. Each answers 200 once
it has recorded the delivery, also for one it ignores (a repeated delivery, an unknown job, an event
that grants nothing): both senders retry anything else.
"""

from typing import Any, Literal

from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.purchases import check_revenuecat_authorization, do_record_purchase_event
from api.http.schemas import Schema, data_envelope, json_object, parse, render
from api.inbound.fal_signature import check_fal_signature
from executions.media_requests import check_deliver_media_webhook


class InboundView(APIView):
    authentication_classes = []
    permission_classes = []


class FalWebhookInput(Schema):
    request_id: str | None = Field(None, max_length=128)
    gateway_request_id: str | None = None
    status: Literal["OK", "ERROR"]
    payload: Any = None
    error: Any = None
    payload_error: Any = None


class FalWebhookOutput(Schema):
    request_id: str
    outcome: Literal["recorded", "duplicate", "unknown_request"] = Field(
        description="`duplicate`: its result was recorded before, nothing done; `unknown_request`: no job of ours"
    )


class FalWebhookView(InboundView):
    @extend_schema(
        summary="Fal.ai webhook",
        description="Where a `media_generation` node on the `fal` provider asks Fal.ai to post its result "
        "(`{PUBLIC_BASE_URL}/inbound/fal`). The ED25519 signature (X-Fal-Webhook-* headers, keys from "
        "FAL_JWKS_URL) is checked, the timestamp must be within 5 minutes: 401 `invalid_signature` otherwise. "
        "The result resumes the waiting execution; a repeated webhook changes nothing.",
        request=FalWebhookInput,
        responses={
            200: data_envelope(FalWebhookOutput),
            400: OpenApiResponse(description="invalid body"),
            401: OpenApiResponse(description="`invalid_signature`"),
            503: OpenApiResponse(description="Fal's keys could not be fetched"),
        },
    )
    def post(self, request):
        body = request.body
        header_request_id = check_fal_signature(request.headers, body)
        webhook = parse(FalWebhookInput, json_object(body))
        request_id = webhook.request_id or header_request_id
        result = {
            "status": webhook.status,
            "payload": webhook.payload,
            "error": webhook.error,
            "payload_error": webhook.payload_error,
        }
        outcome = check_deliver_media_webhook(provider="fal", request_id=request_id, result=result)
        return Response({"data": render(FalWebhookOutput, {"request_id": request_id, "outcome": outcome})})


class RevenueCatEventInput(Schema):
    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=64)
    app_user_id: str | None = None
    product_id: str | None = None
    environment: str | None = None


class RevenueCatWebhookInput(Schema):
    api_version: str | None = None
    event: RevenueCatEventInput


class RevenueCatWebhookOutput(Schema):
    event_id: str
    outcome: str = Field(
        description="granted, ignored_type, unknown_product, unknown_customer or sandbox (what was done the "
        "first time the event came)"
    )
    duplicate: bool = Field(description="The event was received before: nothing was done this time")
    credits: float


class RevenueCatWebhookView(InboundView):
    @extend_schema(
        summary="RevenueCat webhook",
        description="A workspace's RevenueCat purchase events (configured in the admin: the Authorization header "
        "value, and the product -> credits table). INITIAL_PURCHASE, RENEWAL and NON_RENEWING_PURCHASE grant "
        "the product's credits to the customer whose external id is the event's `app_user_id`; every event is "
        "recorded once per event id and answered 200, also when it grants nothing. No integration for the "
        "workspace: 404; another Authorization value: 401 `invalid_authorization`.",
        request=RevenueCatWebhookInput,
        responses={
            200: data_envelope(RevenueCatWebhookOutput),
            400: OpenApiResponse(description="invalid body"),
            401: OpenApiResponse(description="`invalid_authorization`"),
            404: OpenApiResponse(description="no RevenueCat integration for this workspace"),
        },
    )
    def post(self, request, workspace_id):
        integration = check_revenuecat_authorization(
            workspace_id=workspace_id, authorization=request.headers.get("Authorization", "")
        )
        body = json_object(request.body)
        parse(RevenueCatWebhookInput, body)
        event, created = do_record_purchase_event(integration=integration, event=body["event"])
        data = {
            "event_id": event.event_id,
            "outcome": event.outcome,
            "duplicate": not created,
            "credits": event.credits,
        }
        return Response({"data": render(RevenueCatWebhookOutput, data)})
