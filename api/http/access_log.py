"""The API's access log and request metrics, and the request_id of every line a request logs.

The outermost middleware: it binds `request_id` (the client's `X-Request-Id` when it is a plain
token of at most 64 characters, else a new one; echoed in the response) before anything else
runs, and after the response one line on the `api.access` logger: method, route (the URL
pattern), path (the matched path without its query string, a signed token's segment as
`<redacted>`: core/log_hygiene.redact_path; none for a path no route matches, which may be a
mistyped link), status, duration_ms, the key's public `key_prefix` (never the key itself) and
workspace_id when the request authenticated, execution_id when the route names one. This is the
only access log: uvicorn's is off (config/settings.py LOGGING), so a request has one line. The
same answer counts in skillrun_http_requests_total and skillrun_http_request_seconds. A streamed
answer (SSE) is logged when its headers go out. The probes' routes (/healthz, /livez, /readyz,
/metrics) log at DEBUG. A request the body limits refuse before Django runs
(api/http/request_limits.py: 413, 415) gets its line and its count too (`log_refused`).

What a request binds is reset when its response is returned, in the sync and the async chain alike.
"""

import logging
import re
import time
import uuid

from api.http.middleware import SyncAndAsyncMiddleware
from core.log_hygiene import redact_path
from core.metrics import HTTP_DURATION, HTTP_REQUESTS
from core.structured_logs import bind_context, reset_context

logger = logging.getLogger("api.access")

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PROBE_ROUTES = frozenset({"healthz", "livez", "readyz", "metrics"})


def _request_id(request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex


class AccessLogMiddleware(SyncAndAsyncMiddleware):
    def handle(self, request):
        started, request_id = time.perf_counter(), _request_id(request)
        token = bind_context(request_id=request_id)
        try:
            response = self.get_response(request)
            return _finish(request, response, request_id, started)
        finally:
            reset_context(token)

    async def __acall__(self, request):
        started, request_id = time.perf_counter(), _request_id(request)
        token = bind_context(request_id=request_id)
        try:
            response = await self.get_response(request)
            return _finish(request, response, request_id, started)
        finally:
            # Reset here too: a sync server runs this chain through async_to_sync, which copies the
            # context back into its thread. (So lines written while an SSE body streams, after this, have none.)
            reset_context(token)


def log_refused(request, response, started: float) -> None:
    """The access line, the counts and X-Request-Id of an answer given before Django's chain (the
    caller set `request.resolver_match`, None for an unmatched path)."""
    request_id = _request_id(request)
    token = bind_context(request_id=request_id)
    try:
        _finish(request, response, request_id, started)
    finally:
        reset_context(token)


def _finish(request, response, request_id: str, started: float):
    seconds = time.perf_counter() - started
    response["X-Request-Id"] = request_id
    match = getattr(request, "resolver_match", None)
    route = match.route if match is not None and match.route else "unmatched"
    method = request.method if request.method in METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)
    fields = {"method": request.method, "route": route, "status": response.status_code}
    if match is not None:
        fields["path"] = redact_path(request.path)
    fields["duration_ms"] = round(seconds * 1000, 1)
    caller = getattr(request, "caller", None)
    if caller is not None:
        fields["key_prefix"] = caller.api_key.prefix
        fields["workspace_id"] = str(caller.api_key.workspace_id)
    if match is not None and "execution_id" in match.kwargs:
        fields["execution_id"] = str(match.kwargs["execution_id"])
    level = logging.DEBUG if route in PROBE_ROUTES else logging.INFO
    logger.log(level, "%s %s %s", request.method, route, response.status_code, extra=fields)
    return response
