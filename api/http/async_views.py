"""The toolkit of the plain async views (streams, long waits) of every surface: one HTTP method,
errors as the envelope, authentication and the view's work in one sync call, SSE responses."""

import functools

from asgiref.sync import sync_to_async
from django.http import HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.authentication import AuthError, authenticate_headers
from api.http.request_limits import JSON_BODY, JSON_MEDIA_TYPES, BodyLimit
from core.errors import ApiError, error_json
from core.ids import parse_prefixed_id
from core.query_params import natural_number
from executions.stream_tokens import caller_from_stream_token
from executions.streaming import relay_events, stream_is_over


def async_api_view(method: str, body_limit: BodyLimit = JSON_BODY):
    """The plain async views (streams, long waits): one HTTP method, a JSON body of at most
    `body_limit` (checked before it is read, api/http/request_limits.py), and an ApiError raised
    anywhere in the view rendered as the error envelope."""

    def decorate(view):
        @functools.wraps(view)
        async def wrapped(request, *args, **kwargs):
            if request.method != method:
                return error_json(ApiError(405, "method_not_allowed", f"Use {method}."))
            try:
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return error_json(exc)

        wrapped = csrf_exempt(wrapped)
        wrapped.body_limit, wrapped.media_types = body_limit, JSON_MEDIA_TYPES
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
    after = natural_number(raw)
    if after is None:
        raise ApiError(
            400, "invalid_last_event_id", "Last-Event-ID must be an event seq number.", field="Last-Event-ID"
        )
    return after


def sse_response(frames) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx and friends: do not buffer the stream
    return response


def events_response(execution, after_seq: int):
    """An events route's answer: the SSE stream after `after_seq`, or 204 when the execution has
    ended at or before it, so that an EventSource (which reconnects after every stream's end with
    its Last-Event-ID) stops. Without Last-Event-ID (0) the stream replays from the first event."""
    if stream_is_over(execution, after_seq):
        response = HttpResponse(status=204)
        del response["Content-Type"]  # no body, no type
        return response
    return sse_response(relay_events(execution.id, after_seq=after_seq))
