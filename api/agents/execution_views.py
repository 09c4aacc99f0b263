"""Execution endpoints shared by every surface: read, cancel, follow over SSE."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework.response import Response
from rest_framework.views import APIView

from api.agents.serializers import ExecutionData
from api.http.async_views import async_api_view, events_response, last_event_id, run_authenticated
from api.http.openapi import LAST_EVENT_ID_HEADER, STREAM_OVER, async_operation, path_param
from api.http.schemas import Schema, data_envelope, parse, render
from core.permissions import IsWorkspaceKey
from executions import reruns, services
from executions.models import ExecutionState
from executions.selectors import get_readable_execution
from executions.stream_tokens import issue_stream_token


class ExecutionDetailView(APIView):
    Output = ExecutionData

    @extend_schema(summary="Get an execution", responses={200: data_envelope(Output)})
    def get(self, request, execution_id):
        execution = get_readable_execution(request.user, execution_id)
        return Response({"data": render(self.Output, self.Output.fields(execution))})


class ExecutionCancelView(APIView):
    Output = ExecutionData

    @extend_schema(
        summary="Cancel an execution",
        description="Queued and suspended executions are cancelled at once (200); a running one is asked to "
        "stop between steps and streamed chunks (202, `cancel_requested: true`). A completed or failed "
        "execution cannot be cancelled (409 `execution_finished`).",
        request=None,
        responses={
            200: OpenApiResponse(data_envelope(Output), description="cancelled"),
            202: OpenApiResponse(data_envelope(Output), description="stopping"),
            409: OpenApiResponse(description="already finished"),
        },
    )
    def post(self, request, execution_id):
        execution = services.check_request_cancel(get_readable_execution(request.user, execution_id))
        status = 200 if execution.state == ExecutionState.CANCELLED else 202
        return Response({"data": render(self.Output, self.Output.fields(execution))}, status=status)


@async_operation(
    path="/executions/{execution_id}/events",
    method="get",
    operation_id="executions_events",
    tag="executions",
    summary="Follow an execution's events (SSE)",
    description="Starts at the first event, or after `Last-Event-ID` (header, or `last_event_id` / `lastEventId` in "
    "the query for EventSource). Ends after `final` or `error`, or at a suspension.",
    responses={200: "sse", 204: STREAM_OVER, **{status: "error" for status in (400, 401, 404)}},
    parameters=[
        path_param("execution_id"),
        LAST_EVENT_ID_HEADER,
        {"in": "query", "name": "last_event_id", "required": False, "schema": {"type": "integer", "minimum": 0}},
        {
            "in": "query",
            "name": "token",
            "required": False,
            "schema": {"type": "string"},
            "description": "A stream token from POST /executions/{id}/stream-token, instead of the key header.",
        },
    ],
)
@async_api_view("GET")
async def execution_events(request, execution_id):
    """GET /executions/{id}/events: the execution's events after Last-Event-ID, live, to the end."""

    def find(caller):
        after = last_event_id(request)
        return get_readable_execution(caller, execution_id), after

    execution, after = await run_authenticated(request, find, stream_token_for=execution_id)
    return events_response(execution, after)


class ExecutionStreamTokenView(APIView):
    class Output(Schema):
        token: str
        expires_in: int = Field(description="Seconds (SSE_TOKEN_MAX_AGE_SECONDS)")

    @extend_schema(
        summary="Get a stream token for EventSource",
        description="Browsers' EventSource cannot send headers: pass the token as "
        "`GET /executions/{id}/events?token=...` (valid for this execution, SSE_TOKEN_MAX_AGE_SECONDS).",
        request=None,
        responses={201: data_envelope(Output)},
    )
    def post(self, request, execution_id):
        execution = get_readable_execution(request.user, execution_id)
        data = {"token": issue_stream_token(request.user, execution), "expires_in": settings.SSE_TOKEN_MAX_AGE_SECONDS}
        return Response({"data": render(self.Output, data)}, status=201)


class ExecutionForkView(APIView):
    workspace_key_message = "Only a workspace key can fork executions."

    class Input(Schema):
        from_seq: int = Field(
            ge=0,
            le=2**31 - 1,
            description="An event's seq: the fork starts from the latest checkpoint at or before it",
        )
        model: str | None = Field(
            None, min_length=1, max_length=64, description="A model alias on the workspace's allow-list"
        )

    class Output(Schema):
        execution_id: str = Field(description="The fork, a new execution")
        status: ExecutionState

    @extend_schema(
        summary="Fork an execution from a checkpoint",
        description="A new execution of the same agent version, inputs and caller that starts from the latest "
        "checkpoint of this one at or before event `from_seq` (one is saved after every node and every model "
        "turn), on the model alias `model` when given: nothing before the checkpoint runs again. The fork's "
        "events begin with `forked_from` (`source_execution_id`, `from_seq`, `checkpoint_seq`). Workspace keys "
        "only (an end-user key: 403 `forbidden`). 409 `no_checkpoint` when no checkpoint is at or before "
        "`from_seq`, 409 `fork_not_supported` for a skill's execution, 409 `not_rerunnable` for a batch, an "
        "item or a sub-execution, 409 `execution_purged`; 422 `model_not_allowed`; 402 `insufficient_credits`.",
        request=Input,
        responses={
            201: data_envelope(Output),
            **{
                status: OpenApiResponse(description=description)
                for status, description in (
                    (400, "`from_seq_required`, `invalid_from_seq`, `invalid_model`"),
                    (402, "`insufficient_credits`"),
                    (403, "`forbidden`: an end-user key"),
                    (404, "`not_found`"),
                    (409, "`no_checkpoint`, `fork_not_supported`, `not_rerunnable`, `execution_purged`"),
                    (422, "`model_not_allowed`"),
                )
            },
        },
    )
    def post(self, request, execution_id):
        # as the resume routes: the execution (404 unless the key may read it), its body (400), then
        # the key's kind (403 for an end-user key), so a bad body is a 400 for every caller who may see it
        execution = get_readable_execution(request.user, execution_id)
        body = parse(self.Input, request.data if isinstance(request.data, dict) else {})
        if not IsWorkspaceKey().has_permission(request, self):
            self.permission_denied(request, message=self.workspace_key_message)
        fork = reruns.check_fork_execution(execution=execution, from_seq=body.from_seq, model=body.model)
        fork.refresh_from_db(fields=["state"])
        return Response(
            {"data": render(self.Output, {"execution_id": fork.public_id, "status": fork.state})}, status=201
        )
