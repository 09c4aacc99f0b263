"""uvicorn's httptools protocol with a deadline on a request's headers (slowloris).

Why: uvicorn 0.54 has no such deadline. It arms its keep-alive timer (`--timeout-keep-alive`) only
between two requests of a connection, and any byte received cancels it; a new connection, or a
client that sends its headers a byte a second, holds its connection as long as it likes (300 such
connections were held for 60 s). Here every request gets REQUEST_HEADER_TIMEOUT_SECONDS from its
connection (or from its first byte, on a kept-alive connection) to the end of its headers, else a
JSON 408 `request_timeout` and the connection is closed. The body's deadline is the ASGI layer's
(api/http/request_limits.py), which sees the body but never the headers.

Selected with `--http ops.http_protocol:DeadlineHttpToolsProtocol` (ops/processes.py,
docker-compose.yml).
"""

import asyncio
import json

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def timeout_answer(message: str) -> bytes:
    """A 408 with the error envelope of core/errors.py, written on the raw connection."""
    body = json.dumps({"error": {"code": "request_timeout", "message": message}}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose requests must have sent their headers within the deadline."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_headers_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_deadline is None:  # the next request of a kept-alive connection
            self._arm_headers_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_headers_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_headers_deadline()
        super().connection_lost(exc)

    def _arm_headers_deadline(self) -> None:
        self._cancel_headers_deadline()
        self._headers_deadline = self.loop.call_later(settings.REQUEST_HEADER_TIMEOUT_SECONDS, self._headers_too_slow)

    def _cancel_headers_deadline(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        if self.transport.is_closing():
            return
        seconds = settings.REQUEST_HEADER_TIMEOUT_SECONDS
        self.transport.write(timeout_answer(f"The request's headers did not arrive within {seconds:g} s."))
        self.transport.close()
