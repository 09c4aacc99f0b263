"""Execution endpoints shared by every surface: read, cancel, follow over SSE."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from api.agents.serializers import execution_data
from api.http.async_views import async_api_view, last_event_id, run_authenticated, sse_response
from executions import services
from executions.models import ExecutionState
from executions.selectors import get_readable_execution
from executions.stream_tokens import issue_stream_token
from executions.streaming import relay_events


class ExecutionDetailView(APIView):
    @extend_schema(summary="Get an execution", responses={200: OpenApiResponse(description='{"data": execution}')})
    def get(self, request, execution_id):
        execution = get_readable_execution(request.user, execution_id)
        return Response({"data": execution_data(execution)})


class ExecutionCancelView(APIView):
    @extend_schema(
        summary="Cancel an execution",
        description="Queued and suspended executions are cancelled at once (200); a running one is asked to "
        "stop between steps and streamed chunks (202, `cancel_requested: true`). A completed or failed "
        "execution cannot be cancelled (409 `execution_finished`).",
        request=None,
        responses={
            200: OpenApiResponse(description="cancelled"),
            202: OpenApiResponse(description="stopping"),
            409: OpenApiResponse(description="already finished"),
        },
    )
    def post(self, request, execution_id):
        execution = services.check_request_cancel(get_readable_execution(request.user, execution_id))
        status = 200 if execution.state == ExecutionState.CANCELLED else 202
        return Response({"data": execution_data(execution)}, status=status)


@async_api_view("GET")
async def execution_events(request, execution_id):
    """GET /executions/{id}/events: the execution's events after Last-Event-ID, live, to the end."""

    def find(caller):
        after = last_event_id(request)
        return get_readable_execution(caller, execution_id), after

    execution, after = await run_authenticated(request, find, stream_token_for=execution_id)
    return sse_response(relay_events(execution.id, after_seq=after))


class ExecutionStreamTokenView(APIView):
    @extend_schema(
        summary="Get a stream token for EventSource",
        description="Browsers' EventSource cannot send headers: pass the token as "
        "`GET /executions/{id}/events?token=...` (valid for this execution, SSE_TOKEN_MAX_AGE_SECONDS).",
        request=None,
        responses={201: OpenApiResponse(description='{"data": {"token": "...", "expires_in": 300}}')},
    )
    def post(self, request, execution_id):
        execution = get_readable_execution(request.user, execution_id)
        token = issue_stream_token(request.user, execution)
        return Response({"data": {"token": token, "expires_in": settings.SSE_TOKEN_MAX_AGE_SECONDS}}, status=201)
