"""The api's published port (compose's `ports: ["8000:8000"]`): a TCP forwarder in the test process
from 127.0.0.1:<port> to the api host's :8000, as Docker's proxy forwards a published port.

`cut()` drops every connection open at that moment, as a network would (SSE clients then resume
with Last-Event-ID). While the api is down a new connection is closed at once (a refused connect)."""

from __future__ import annotations

import asyncio
import socket
import threading


class Forwarder:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self._run, daemon=True, name="published-port")
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._connection, sock=self.listener))
        self.loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.close()
            return
        self.writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    def cut(self) -> int:
        """Close every open connection, both ends; returns how many sockets that was."""

        def close_all() -> int:
            writers = list(self.writers)
            for writer in writers:
                writer.transport.abort()
            return len(writers)

        return self._call(close_all)

    def _call(self, fn):
        done = threading.Event()
        result = {}

        def run():
            result["value"] = fn()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return result.get("value", 0)

    def close(self) -> None:
        def stop():
            for writer in list(self.writers):
                writer.transport.abort()
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)
