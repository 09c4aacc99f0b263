"""Execution endpoints shared by every surface: read, cancel, follow over SSE."""

import functools

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import AuthError, authenticate_headers
from config.errors import ApiError, error_json
from executions import services
from executions.models import ExecutionState
from config.ids import parse_prefixed_id
from executions.selectors import get_readable_execution
from executions.stream_tokens import caller_from_stream_token, issue_stream_token
from executions.serializers import execution_data
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
        responses={200: OpenApiResponse(description="cancelled"), 202: OpenApiResponse(description="stopping"),
                   409: OpenApiResponse(description="already finished")},
    )
    def post(self, request, execution_id):
        execution = services.cancel_on_request(get_readable_execution(request.user, execution_id))
        status = 200 if execution.state == ExecutionState.CANCELLED else 202
        return Response({"data": execution_data(execution)}, status=status)


# --- SSE -------------------------------------------------------------------------------------------


def async_api_view(method: str):
    """The plain async views (streams, long waits): one HTTP method, and an ApiError raised anywhere
    in the view rendered as the error envelope."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        async def wrapped(request, *args, **kwargs):
            if request.method != method:
                return error_json(ApiError(405, "method_not_allowed", f"Use {method}."))
            try:
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return error_json(exc)

        return wrapped

    return decorate


def authenticate(request, stream_token_for: str | None = None):
    """The request's caller from its API key (or, for `stream_token_for` an execution id, from a
    `?token=` stream token), also set as request.caller for the response headers. Sync."""
    try:
        if stream_token_for is not None and "token" in request.GET:
            parsed = parse_prefixed_id(stream_token_for, "execution")
            request.caller = caller_from_stream_token(request.GET["token"], parsed)
        else:
            request.caller = authenticate_headers(request.headers)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, exc.message)
    return request.caller


async def run_authenticated(request, func, *args, stream_token_for: str | None = None):
    """func(caller, *args) in the same sync call as the authentication: each sync call of an async
    view is a hop through a thread (about 0.1 ms of CPU) that takes a pooled connection and gives
    it back when it returns (config/asgi.py), so a view makes as few as it can."""

    def authenticate_and_run():
        return func(authenticate(request, stream_token_for), *args)

    return await sync_to_async(authenticate_and_run)()


def last_event_id(request) -> int:
    """Last-Event-ID header, or `last_event_id` / `lastEventId` in the query for EventSource."""
    raw = (
        request.headers.get("Last-Event-ID")
        or request.GET.get("last_event_id")
        or request.GET.get("lastEventId")
        or "0"
    )
    if not raw.strip().isdigit():
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an event seq number.", field="Last-Event-ID")
    return int(raw)


def sse_response(frames) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx and friends: do not buffer the stream
    return response


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
