"""Request bodies refused before they are read: the first layer of the ASGI application.

Django's ASGI handler reads a whole body into a spooled file before any middleware runs, so a
check in a middleware or a view comes after the read (an unauthenticated 300 MiB POST was read to
the end, and a 3 MB JSON body got Django's HTML 400). This layer sees the request first. It finds
the route's body contract in the URL conf: the view's `body_limit` (JSON_BODY unless it declares
another) and the media types it parses (a DRF view's parsers; application/json for the async
views). Then, before authentication (so a refusal costs no database query):

- a Content-Length over the limit: 413 before a byte of the body is read;
- a chunked body: cut at the limit, 413;
- a body that has not all arrived REQUEST_BODY_TIMEOUT_SECONDS after its headers: 408
  `request_timeout` (a slow client holds no connection for longer; its headers have their own
  deadline, ops/http_protocol.py);
- a body (Content-Length > 0, or chunked) of a type the route does not parse: 415
  `unsupported_media_type`. A request without a body passes whatever its Content-Type.

A refusal closes the connection (`Connection: close`), since the rest of the body is not read. It
carries the CORS headers an answer of the route would (django-cors-headers' own check, so the same
allow-list and exposed headers): a browser app on an allowed origin can read the 413 or 415.
Paths that match no route get JSON_BODY and no type check (Django then answers 404).
"""

import asyncio
import io
import json
import time
from dataclasses import dataclass

from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.urls import Resolver404, ResolverMatch, resolve
from rest_framework.views import APIView

from api.http.access_log import log_refused
from core.errors import ApiError
from files.services import size_limit_text

MULTIPART_ROOM = 64 * 1024  # the multipart framing around an uploaded file: boundaries, part headers


@dataclass(frozen=True)
class BodyLimit:
    """A route's largest body: `limit` bytes (a number, or the name of the setting holding it) plus
    `room`; refused with 413 `code` naming `field`, the message stating `limit`."""

    limit: int | str
    room: int = 0
    code: str = "request_too_large"
    field: str | None = None
    message: str = "The request body is limited to {limit}."

    def error(self) -> ApiError:
        return ApiError(413, self.code, self.message.format(limit=size_limit_text(self._limit())), field=self.field)

    @property
    def max_bytes(self) -> int:
        return self._limit() + self.room

    def _limit(self) -> int:
        return getattr(settings, self.limit) if isinstance(self.limit, str) else self.limit


JSON_BODY = BodyLimit("REQUEST_BODY_MAX_BYTES")
JSON_MEDIA_TYPES = ("application/json",)


def upload_limit(limit: int | str, what: str = "Files") -> BodyLimit:
    """A multipart upload of one file of at most `limit` bytes (413 `file_too_large`, field `file`)."""
    return BodyLimit(limit, MULTIPART_ROOM, "file_too_large", "file", f"{what} are limited to {{limit}}.")


def _resolve(path: str) -> ResolverMatch | None:
    try:
        return resolve(path)
    except Resolver404:
        return None


def route_contract(path: str) -> tuple[BodyLimit, tuple[str, ...] | None]:
    """The body limit of the view `path` resolves to and the media types it parses (None: any)."""
    return _contract(_resolve(path))


def _contract(match: ResolverMatch | None) -> tuple[BodyLimit, tuple[str, ...] | None]:
    if match is None:
        return JSON_BODY, None
    view = getattr(match.func, "view_class", match.func)
    if isinstance(view, type) and issubclass(view, APIView):
        media_types = tuple(parser.media_type for parser in view.parser_classes)
    else:
        media_types = getattr(view, "media_types", None)
    return getattr(view, "body_limit", JSON_BODY), media_types


def _accepts(media_types: tuple[str, ...], content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type.endswith("+json") and "application/json" in media_types:
        return True  # application/merge-patch+json and friends are JSON too
    return media_type in media_types


class RequestLimits:
    """ASGI middleware: the body contract of the route, checked before the body is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = dict(scope["headers"])  # names are lower-case bytes in ASGI
        length = headers.get(b"content-length", b"").strip()
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and length.strip(b"0") == b"":
            return await self.app(scope, receive, send)  # no body: nothing to check (the streams' GETs)
        match = _resolve(scope["path"])
        limit, media_types = _contract(match)
        if length.isdigit() and int(length) > limit.max_bytes:
            return await _refuse(scope, match, send, limit.error(), started)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if media_types is not None and not _accepts(media_types, content_type):
            types = ", ".join(media_types)
            error = ApiError(415, "unsupported_media_type", f"Send the body as {types}.")
            return await _refuse(scope, match, send, error, started)
        received, refusal = 0, None
        deadline = time.monotonic() + settings.REQUEST_BODY_TIMEOUT_SECONDS
        body_done = False

        async def receive_within_limits():
            """The body's messages, cut at the limit (a chunked body) or the deadline; after the
            body, Django listens for the client's disconnect here: that waits as long as it must."""
            nonlocal received, refusal, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                refusal = _body_timeout()
                return {"type": "http.disconnect"}  # Django stops reading and answers nothing
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if chunked and received > limit.max_bytes:
                    refusal = limit.error()
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, receive_within_limits, send)
        if refusal is not None:
            await _refuse(scope, match, send, refusal, started)


def _body_timeout() -> ApiError:
    seconds = settings.REQUEST_BODY_TIMEOUT_SECONDS
    return ApiError(408, "request_timeout", f"The request's body did not arrive within {seconds:g} s.")


async def _refuse(scope, match: ResolverMatch | None, send, error: ApiError, started: float) -> None:
    body = json.dumps(error.body()).encode()
    response = HttpResponse(body, status=error.status_code, content_type="application/json")
    response["Content-Length"] = str(len(body))
    response["Connection"] = "close"  # the rest of the body is never read
    request = ASGIRequest(scope, io.BytesIO())  # its headers and path only; the body is never read
    _add_cors_headers(request, response)
    request.resolver_match = match  # the access line names the route
    log_refused(request, response, started)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _add_cors_headers(request, response: HttpResponse) -> None:
    """What the CORS middleware adds to the route's answers, which this refusal never reaches."""
    CorsMiddleware(lambda request: response).add_response_headers(request, response)
