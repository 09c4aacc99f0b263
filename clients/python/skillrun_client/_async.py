"""The asynchronous client: the same operations, awaited; streams are async iterators."""

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx

from skillrun_client import models as m
from skillrun_client._core import (
    Call,
    Config,
    Operations,
    SseParser,
    StreamSpec,
    StreamState,
    batch_results,
    parse_answer,
    retry_delay,
    should_retry,
    tool_calls_awaiting,
)
from skillrun_client._sync import _call_tool
from skillrun_client.errors import SkillrunError, TransportError, error_from_response


class AsyncSkillrunClient(Operations):
    """`AsyncSkillrunClient(base_url, api_key, workspace_id)` (or the SKILLRUN_* variables);
    `async with` it, or `await client.aclose()`. Tool callables may be plain functions or coroutines."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        workspace_id: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_reconnects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.config = Config.from_args(base_url, api_key, workspace_id, timeout, max_retries)
        self.max_reconnects = max_reconnects
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url,
            headers=self.config.headers(),
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method,
                call.path,
                json=call.json if call.files is None else None,
                params=call.params,
                headers=call.headers,
                files=call.files,
            )
            try:
                response = await self._http.send(request, stream=stream, follow_redirects=call.raw)
            except httpx.TransportError as exc:
                if not should_retry(call, None, attempt, self.config.max_retries):
                    raise TransportError(str(exc) or type(exc).__name__, code="connection_error", status=None) from exc
                await asyncio.sleep(retry_delay(attempt, None))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            if should_retry(call, response, attempt, self.config.max_retries):
                await asyncio.sleep(retry_delay(attempt, response))
                attempt += 1
                continue
            raise error_from_response(response)

    async def _call(self, call: Call):
        return parse_answer(call, await self._send(call))

    async def _stream(self, spec: StreamSpec) -> AsyncIterator[m.Event]:
        state = StreamState(spec, self.max_reconnects)
        while not state.ended:
            try:
                response = await self._send(state.next_call(), stream=True)
            except SkillrunError as exc:
                if state.adopt_original(exc):
                    continue
                raise
            if response.status_code == 204:  # resumed at or past the end
                await response.aclose()
                return
            parser = SseParser()
            try:
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None and state.accept(event):
                        yield event
                        if state.ended:
                            return
            except httpx.TransportError:
                pass  # dropped: resumed below
            finally:
                await response.aclose()
            state.closed()
            if state.give_up():
                raise TransportError("the stream kept breaking", code="stream_broken", status=None)
            if not state.ended:
                await asyncio.sleep(retry_delay(state.failures - 1, None))

    async def run_with_client_tools(
        self,
        agent_id: str,
        message: str,
        tools: dict[str, Callable],
        *,
        tool_specs: list[m.ClientTool | dict] | None = None,
        on_event: Callable[[m.Event], None] | None = None,
        **fields,
    ) -> list[m.Event]:
        """As SkillrunClient.run_with_client_tools; a tool may return an awaitable."""
        specs = tool_specs or [{"name": name} for name in tools]
        events: list[m.Event] = []
        stream = self.execute_stream(agent_id, message=message, client_tools=specs, **fields)
        while True:
            async for event in stream:
                events.append(event)
                if on_event:
                    on_event(event)
            pending = tool_calls_awaiting(events)
            if events[-1].type != "suspended" or not pending:
                return events
            execution_id = events[-1].execution_id
            for call in pending:
                result, outcome = _call_tool(tools, call)
                if asyncio.iscoroutine(result):
                    try:
                        result = await result
                    except Exception as exc:  # as in the sync client: the model sees the failure
                        result, outcome = {"error": f"{type(exc).__name__}: {exc}"}, "error"
                await self.tool_result(execution_id, call.model_extra["tool_call_id"], result, outcome=outcome)
            stream = self.events(execution_id, after=events[-1].seq)

    async def approve(self, execution_id: str, comment: str | None = None, *, decision: str = "approve"):
        after = (await self.get_execution(execution_id)).last_event_seq
        await self.approval(execution_id, decision, comment)
        return [event async for event in self.events(execution_id, after=after)]

    async def send_event(self, execution_id: str, event: str, payload=None):
        after = (await self.get_execution(execution_id)).last_event_seq
        await self.external_event(execution_id, event, payload)
        return [e async for e in self.events(execution_id, after=after)]

    async def execute_with_file(
        self, agent_id: str, message: str, filename: str, content: bytes, content_type: str, **fields
    ):
        upload = await self.upload_attachment(filename, content, content_type)
        attachment = {"storage_key": upload.storage_key, "filename": filename, "content_type": upload.content_type}
        return await self.execute(agent_id, message=message, attachments=[attachment], **fields)

    async def batch(self, agent_id: str, items, **kwargs) -> dict[str, m.Event]:
        return batch_results([event async for event in self.execute_batch(agent_id, items, **kwargs)])
