"""The synchronous client."""

import time
from collections.abc import Callable, Iterator

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
from skillrun_client.errors import SkillrunError, TransportError, error_from_response


class SkillrunClient(Operations):
    """`SkillrunClient(base_url, api_key, workspace_id)`; each defaults to SKILLRUN_BASE_URL,
    SKILLRUN_API_KEY, SKILLRUN_WORKSPACE_ID. Use as a context manager, or call close()."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        workspace_id: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_reconnects: int = 5,
        transport: httpx.BaseTransport | None = None,
    ):
        self.config = Config.from_args(base_url, api_key, workspace_id, timeout, max_retries)
        self.max_reconnects = max_reconnects
        self._http = httpx.Client(
            base_url=self.config.base_url,
            headers=self.config.headers(),
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """The response (2xx), after the retries the call allows; an error answer raised."""
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
                response = self._http.send(request, stream=stream, follow_redirects=call.raw)
            except httpx.TransportError as exc:
                if not should_retry(call, None, attempt, self.config.max_retries):
                    raise TransportError(str(exc) or type(exc).__name__, code="connection_error", status=None) from exc
                time.sleep(retry_delay(attempt, None))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            if should_retry(call, response, attempt, self.config.max_retries):
                time.sleep(retry_delay(attempt, response))
                attempt += 1
                continue
            raise error_from_response(response)

    def _call(self, call: Call):
        return parse_answer(call, self._send(call))

    def _stream(self, spec: StreamSpec) -> Iterator[m.Event]:
        state = StreamState(spec, self.max_reconnects)
        while not state.ended:
            try:
                response = self._send(state.next_call(), stream=True)
            except SkillrunError as exc:
                if state.adopt_original(exc):
                    continue
                raise
            if response.status_code == 204:  # resumed at or past the end
                response.close()
                return
            parser = SseParser()
            try:
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None and state.accept(event):
                        yield event
                        if state.ended:
                            return
            except httpx.TransportError:
                pass  # dropped: resumed below
            finally:
                response.close()
            state.closed()
            if state.give_up():
                raise TransportError("the stream kept breaking", code="stream_broken", status=None)
            if not state.ended:
                time.sleep(retry_delay(state.failures - 1, None))

    # --- helpers for the flows of the agents spec ---

    def run_with_client_tools(
        self,
        agent_id: str,
        message: str,
        tools: dict[str, Callable],
        *,
        tool_specs: list[m.ClientTool | dict] | None = None,
        on_event: Callable[[m.Event], None] | None = None,
        **fields,
    ) -> list[m.Event]:
        """Execute with client tools and answer each `tool_call_awaiting_client` by calling
        `tools[name](**arguments)` (an exception is sent as outcome `error`), resuming through
        tool-result until the execution ends; returns every event."""
        specs = tool_specs or [{"name": name} for name in tools]
        events: list[m.Event] = []
        stream = self.execute_stream(agent_id, message=message, client_tools=specs, **fields)
        while True:
            for event in stream:
                events.append(event)
                if on_event:
                    on_event(event)
            pending = tool_calls_awaiting(events)
            if events[-1].type != "suspended" or not pending:
                return events
            execution_id = events[-1].execution_id
            for call in pending:
                result, outcome = _call_tool(tools, call)
                self.tool_result(execution_id, call.model_extra["tool_call_id"], result, outcome=outcome)
            stream = self.events(execution_id, after=events[-1].seq)

    def approve(self, execution_id: str, comment: str | None = None, *, decision: str = "approve") -> list[m.Event]:
        """Decide a gate (`awaiting_approval`) and follow the execution to its next end."""
        after = self.get_execution(execution_id).last_event_seq
        self.approval(execution_id, decision, comment)
        return list(self.events(execution_id, after=after))

    def send_event(self, execution_id: str, event: str, payload=None) -> list[m.Event]:
        """Post the external event a `wait_event` waits for and follow the execution to its next end."""
        after = self.get_execution(execution_id).last_event_seq
        self.external_event(execution_id, event, payload)
        return list(self.events(execution_id, after=after))

    def execute_with_file(
        self, agent_id: str, message: str, filename: str, content: bytes, content_type: str, **fields
    ) -> m.ExecuteResult:
        """Upload an attachment and execute with it."""
        upload = self.upload_attachment(filename, content, content_type)
        attachment = {"storage_key": upload.storage_key, "filename": filename, "content_type": upload.content_type}
        return self.execute(agent_id, message=message, attachments=[attachment], **fields)

    def batch(self, agent_id: str, items: list[m.BatchItem | dict], **kwargs) -> dict[str, m.Event]:
        """Run a batch to its end: per item key, its `batch_progress` event (status, output or error)."""
        return batch_results(list(self.execute_batch(agent_id, items, **kwargs)))


def _call_tool(tools: dict[str, Callable], call: m.Event):
    extra = call.model_extra
    function = tools.get(extra["name"])
    if function is None:
        return {"error": f"no client tool {extra['name']!r}"}, "error"
    try:
        return function(**(extra.get("arguments") or {})), "success"
    except Exception as exc:  # the tool's failure is the model's to handle, as the spec's outcome
        return {"error": f"{type(exc).__name__}: {exc}"}, "error"
