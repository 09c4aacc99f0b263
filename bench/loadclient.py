"""A light HTTP/1.1 + Server-Sent Events client on raw asyncio streams, for thousands of connections.

httpx costs ~100 KiB and much CPU per connection; this costs a socket and a few objects, so the
load the bench measures is the platform's, not the client's. Only what the bench needs:
keep-alive requests with a JSON body, responses with Content-Length or chunked bodies, and SSE
frames (`id:` / `data:` lines, comments skipped) with the time each frame arrived.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field


class HttpError(Exception):
    pass


@dataclass
class SseEvent:
    seq: int | None
    data: bytes
    received: float  # time.perf_counter() when the bytes arrived

    def json(self) -> dict:
        return json.loads(self.data)


@dataclass
class Response:
    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)


async def one_at_a_time(host: str, port: int, call, requests: int, warmup: int) -> list:
    """`call(connection)` `warmup` times, then `requests` times (their results), one after another on
    one keep-alive connection."""
    connection = await Connection(host, port).open()
    try:
        for _ in range(warmup):
            await call(connection)
        return [await call(connection) for _ in range(requests)]
    finally:
        connection.close()


class Connection:
    """One keep-alive HTTP/1.1 connection to host:port."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> "Connection":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def _send(self, method: str, path: str, headers: dict, body) -> None:
        if self.writer is None:
            await self.open()
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(payload)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines += [f"{key}: {value}" for key, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await self.writer.drain()

    async def _head(self) -> Response:
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed before the response")
        parts = status_line.split(b" ", 2)
        response = Response(status=int(parts[1]))
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            response.headers[key.strip().lower()] = value.strip()
        return response

    async def _chunks(self, response: Response):
        """The body's pieces as they arrive, with their arrival time."""
        if response.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self.reader.readline()
                if not size_line:
                    raise HttpError("connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await self.reader.readline()  # the empty trailer line
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2], time.perf_counter()
        elif "content-length" in response.headers:
            length = int(response.headers["content-length"])
            if length:
                yield await self.reader.readexactly(length), time.perf_counter()
        else:  # until the server closes
            while data := await self.reader.read(65536):
                yield data, time.perf_counter()
            self.close()
        if response.headers.get("connection", "").lower() == "close":
            self.close()

    async def request(self, method: str, path: str, headers: dict | None = None, body=None) -> Response:
        """One request on this connection (reopened if the server closed it); the whole body read."""
        await self._send(method, path, headers or {}, body)
        response = await self._head()
        response.body = b"".join([data async for data, _ in self._chunks(response)])
        return response

    async def stream(self, method: str, path: str, headers: dict | None = None, body=None, on_head=None):
        """Yield the SSE events of the response in order, until the server ends the body.

        `on_head(response)` is called once the status line and headers arrived; a status other than
        200 raises HttpError after it."""
        await self._send(method, path, {"Accept": "text/event-stream", **(headers or {})}, body)
        response = await self._head()
        if on_head is not None:
            on_head(response)
        if response.status != 200:
            body = b"".join([data async for data, _ in self._chunks(response)])
            raise HttpError(f"HTTP {response.status}: {body[:200]!r}")
        buffer = b""
        async for data, received in self._chunks(response):
            buffer += data
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                seq, lines = None, []
                for line in frame.split(b"\n"):
                    if line.startswith(b"data:"):
                        lines.append(line[5:].lstrip(b" "))
                    elif line.startswith(b"id:"):
                        seq = int(line[3:].strip())
                if lines:  # a comment-only frame (heartbeat) has no data
                    yield SseEvent(seq=seq, data=b"\n".join(lines), received=received)
