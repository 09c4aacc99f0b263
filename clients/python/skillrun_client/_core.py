"""What the sync and async clients share: configuration, the operations as `Call`s (method, path,
body, response model), the retry policy, SSE frame parsing and the state of a resumable stream.
The operations are written once in `Operations`; each client supplies `_call` / `_stream`, which
either answer (sync) or return an awaitable / async iterator (async)."""

import json
import os
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter

from skillrun_client import models as m
from skillrun_client.errors import SkillrunError

# events after which the server closes the stream; `suspended` too, when it is the latest event
END_TYPES = frozenset({"final", "error", "batch_completed"})
PAUSE_TYPE = "suspended"


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str
    workspace_id: str | None
    timeout: float
    max_retries: int

    @classmethod
    def from_args(cls, base_url, api_key, workspace_id, timeout, max_retries) -> "Config":
        base_url = base_url or os.environ.get("SKILLRUN_BASE_URL")
        api_key = api_key or os.environ.get("SKILLRUN_API_KEY")
        workspace_id = workspace_id or os.environ.get("SKILLRUN_WORKSPACE_ID")
        if not base_url or not api_key:
            raise ValueError("base_url and api_key are required (or SKILLRUN_BASE_URL / SKILLRUN_API_KEY)")
        if workspace_id and not workspace_id.startswith("workspace:"):
            workspace_id = f"workspace:{workspace_id}"
        return cls(base_url.rstrip("/"), api_key, workspace_id, timeout, max_retries)

    def headers(self) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}", "User-Agent": "skillrun-client/0.1"}
        if self.workspace_id:
            headers["X-Workspace-Id"] = self.workspace_id
        return headers


@dataclass
class Call:
    """One request and how to read its answer: `model` parses `data` (or the whole body with
    `envelope=False`); `idempotent` allows retries."""

    method: str
    path: str
    model: Any = None
    json: dict | None = None
    params: dict | None = None
    headers: dict = field(default_factory=dict)
    files: dict | None = None
    envelope: bool = True
    idempotent: bool = False
    query_page: bool = False
    raw: bool = False  # the body's bytes

    def __post_init__(self):
        self.idempotent = self.idempotent or self.method == "GET" or "Idempotency-Key" in self.headers


def idempotency_headers(key: str | None) -> dict:
    """Every start carries an Idempotency-Key (one per call unless given), so a retry of it after a
    lost answer cannot start a second execution."""
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """Retry-After when the server gave one (seconds), else exponential backoff with jitter."""
    if response is not None:
        try:
            return min(float(response.headers.get("Retry-After", "")), 60.0)
        except ValueError:
            pass
    return min(0.25 * 2**attempt, 8.0) * (0.5 + random.random() / 2)


def should_retry(call: Call, response: httpx.Response | None, attempt: int, max_retries: int) -> bool:
    """Only idempotent calls, only a connection error (response None), a 503 or a 429."""
    if not call.idempotent or attempt >= max_retries:
        return False
    return response is None or response.status_code in (429, 503)


def parse_answer(call: Call, response: httpx.Response):
    if call.raw:
        return response.content
    if call.model is None or response.status_code == 204:
        return None
    body = response.json()
    if call.query_page:
        headers = response.headers
        return m.QueryPage(
            items=TypeAdapter(list[m.QueryExecution]).validate_python(body),
            total_count=int(headers.get("X-Total-Count", len(body))),
            total_pages=int(headers.get("X-Total-Pages", 1)),
            page_number=int(headers.get("X-Page-Number", 1)),
            page_size=int(headers.get("X-Page-Size", len(body))),
        )
    value = body["data"] if call.envelope else body
    return TypeAdapter(call.model).validate_python(value)


def _request_body(request: BaseModel | dict | None, model: type[m.Request]) -> dict:
    if request is None:
        return {}
    if isinstance(request, dict):
        request = model.model_validate(request)
    return request.body()


class SseParser:
    """SSE frames from lines: `id:` + `data:`, dispatched on a blank line; comments (heartbeats)
    skipped. A frame cut off by a dropped connection is never dispatched."""

    def __init__(self):
        self._id = None
        self._data: list[str] = []

    def feed(self, line: str) -> m.Event | None:
        if line == "":
            data, self._data = self._data, []
            if not data:
                return None
            return m.Event.model_validate(json.loads("\n".join(data)))
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


@dataclass
class StreamSpec:
    """A stream to follow: its first request, and where to resume once the execution id is known."""

    first: Call | None
    execution_id: str | None = None
    events_path: str = "/executions/{execution_id}/events"
    last_seq: int = 0


class StreamState:
    """What a resumable stream has seen: the last seq (resumes ask for the events after it;
    anything at or below it is a duplicate), whether it has ended, and how often it failed in a
    row without progress."""

    def __init__(self, spec: StreamSpec, max_reconnects: int):
        self.spec = spec
        self.last_seq = spec.last_seq
        self.last_type: str | None = None
        self.ended = False
        self.failures = 0
        self.max_reconnects = max_reconnects
        self.connections = 0

    def next_call(self) -> Call:
        self.connections += 1
        if self.spec.execution_id is None:  # nothing received yet: (re)send the start itself
            return self.spec.first
        path = self.spec.events_path.format(execution_id=self.spec.execution_id)
        headers = {"Accept": "text/event-stream"}
        if self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        return Call("GET", path, headers=headers)

    def accept(self, event: m.Event) -> bool:
        """True when the event is new (to be yielded); records it."""
        if self.spec.execution_id is None:
            self.spec.execution_id = event.execution_id
        if event.seq <= self.last_seq:
            return False
        self.last_seq, self.last_type, self.failures = event.seq, event.type, 0
        if event.type in END_TYPES:
            self.ended = True
        return True

    def closed(self) -> None:
        """The connection ended before an end event. After a suspension that ends the stream (the
        server closes there; after a drop, a resume would wait with the execution); otherwise it
        is one more connection in a row without a new event (accept() resets the count)."""
        if self.last_type == PAUSE_TYPE:
            self.ended = True
        else:
            self.failures += 1

    def adopt_original(self, error: SkillrunError) -> bool:
        """A re-sent start answered 409 idempotency_key_reused: the first attempt did start the
        execution, so follow that one from its first event."""
        if error.code == "idempotency_key_reused" and error.execution_id and self.spec.execution_id is None:
            self.spec.execution_id = error.execution_id
            return True
        return False

    def give_up(self) -> bool:
        return self.failures > self.max_reconnects


class Operations:
    """Every operation of the three surfaces, once. `_call(Call)` and `_stream(StreamSpec)` are the
    client's (sync: the answer; async: an awaitable or async iterator)."""

    def _call(self, call: Call):  # pragma: no cover - supplied by the clients
        raise NotImplementedError

    def _stream(self, spec: StreamSpec):  # pragma: no cover
        raise NotImplementedError

    # --- agents API ---

    def list_agents(self):
        """`GET /agents`: the workspace's published agents, by name."""
        return self._call(Call("GET", "/agents", list[m.Agent]))

    def execute(self, agent_id: str, request: m.ExecuteRequest | dict | None = None, *, idempotency_key=None, **fields):
        """`POST /agents/{id}/execute`: blocks until completed, failed or suspended -> ExecuteResult."""
        body = _request_body(request or fields, m.ExecuteRequest)
        return self._call(
            Call(
                "POST",
                f"/agents/{agent_id}/execute",
                m.ExecuteResult,
                json=body,
                headers=idempotency_headers(idempotency_key),
            )
        )

    def execute_stream(self, agent_id: str, request=None, *, idempotency_key=None, **fields):
        """`POST /agents/{id}/execute/stream`: the events, resumed by themselves after a drop."""
        body = _request_body(request or fields, m.ExecuteRequest)
        headers = {**idempotency_headers(idempotency_key), "Accept": "text/event-stream"}
        return self._stream(StreamSpec(Call("POST", f"/agents/{agent_id}/execute/stream", json=body, headers=headers)))

    def execute_batch(self, agent_id: str, items: list[m.BatchItem | dict], *, idempotency_key=None):
        """`POST /agents/{id}/execute/batch`: the batch's events (`batch_started`, `batch_progress`
        per item, `batch_completed`)."""
        body = _request_body({"items": items}, m.BatchRequest)
        headers = {**idempotency_headers(idempotency_key), "Accept": "text/event-stream"}
        return self._stream(StreamSpec(Call("POST", f"/agents/{agent_id}/execute/batch", json=body, headers=headers)))

    def get_execution(self, execution_id: str):
        return self._call(Call("GET", f"/executions/{execution_id}", m.Execution))

    def cancel_execution(self, execution_id: str):
        """200 cancelled at once, 202 while a running worker stops: the execution either way."""
        return self._call(Call("POST", f"/executions/{execution_id}/cancel", m.Execution))

    def events(self, execution_id: str, *, after: int = 0):
        """`GET /executions/{id}/events` after seq `after`, live, to the end (resumed after drops)."""
        return self._stream(StreamSpec(None, execution_id=execution_id, last_seq=after))

    def fork_execution(self, execution_id: str, from_seq: int, *, model: str | None = None):
        """`POST /executions/{id}/fork` (workspace keys): a new execution from the latest checkpoint
        at or before event `from_seq`, on the model alias `model` when given -> ForkResult."""
        body = _request_body({"from_seq": from_seq, "model": model}, m.ForkRequest)
        return self._call(Call("POST", f"/executions/{execution_id}/fork", m.ForkResult, json=body))

    def stream_token(self, execution_id: str):
        return self._call(Call("POST", f"/executions/{execution_id}/stream-token", m.StreamToken))

    def tool_result(self, execution_id: str, tool_call_id: str, result, *, outcome: str = "success"):
        body = _request_body({"tool_call_id": tool_call_id, "result": result, "outcome": outcome}, m.ToolResultRequest)
        return self._call(Call("POST", f"/executions/{execution_id}/tool-result", m.ResumeResult, json=body))

    def approval(self, execution_id: str, decision: str, comment: str | None = None):
        body = _request_body({"decision": decision, "comment": comment}, m.ApprovalRequest)
        return self._call(Call("POST", f"/executions/{execution_id}/approval", m.ResumeResult, json=body))

    def external_event(self, execution_id: str, event: str, payload=None):
        body = _request_body({"event": event, "payload": payload}, m.ExternalEventRequest)
        return self._call(Call("POST", f"/executions/{execution_id}/external-event", m.ResumeResult, json=body))

    def upload_attachment(self, filename: str, content: bytes, content_type: str = "application/octet-stream"):
        files = {"file": (filename, content, content_type)}
        return self._call(Call("POST", "/attachments/upload", m.AttachmentUpload, files=files))

    def preview_credits(self, agent_id: str, inputs: dict | None = None, attachments: list | None = None):
        """`POST /agents/{id}/preview-credits`: what an execution would cost; nothing runs."""
        body = _request_body({"inputs": inputs, "attachments": attachments}, m.PreviewCreditsRequest)
        return self._call(Call("POST", f"/agents/{agent_id}/preview-credits", m.PreviewCredits, json=body))

    def open_conversation(self, agent_id: str):
        """`POST /my/conversations`: the caller's active conversation with the agent (new or existing)."""
        body = _request_body({"agent_id": agent_id}, m.ConversationRequest)
        return self._call(Call("POST", "/my/conversations", m.Conversation, json=body))

    def list_conversations(self, *, state: str | None = None):
        params = {"state": state} if state else None
        return self._call(Call("GET", "/my/conversations", list[m.Conversation], params=params))

    def archive_conversation(self, conversation_id: str):
        return self._call(Call("POST", f"/my/conversations/{conversation_id}/archive", m.Conversation))

    def conversation_messages(self, conversation_id: str, *, limit=None, offset=None):
        params = {k: v for k, v in dict(limit=limit, offset=offset).items() if v is not None}
        path = f"/my/conversations/{conversation_id}/messages"
        return self._call(Call("GET", path, m.MessagePage, params=params, envelope=False))

    def message_feedback(self, conversation_id: str, message_id: str, value: int):
        body = _request_body({"value": value}, m.FeedbackRequest)
        path = f"/my/conversations/{conversation_id}/messages/{message_id}/feedback"
        return self._call(Call("POST", path, m.Feedback, json=body))

    def user_memory(self, external_user_id: str):
        return self._call(Call("GET", f"/users/{external_user_id}/memory", list[m.MemoryFact]))

    def forget_user(self, external_user_id: str):
        return self._call(Call("DELETE", f"/users/{external_user_id}/memory", m.MemoryForgotten))

    def forget_fact(self, external_user_id: str, fact_id: str):
        return self._call(Call("DELETE", f"/users/{external_user_id}/memory/{fact_id}"))

    # --- skills API ---

    def _space(self, space_id: str | None) -> str:
        space = space_id or self.config.workspace_id
        if not space:
            raise ValueError("a space id is needed (workspace_id / SKILLRUN_WORKSPACE_ID)")
        return space.removeprefix("workspace:")

    def start_skill(
        self, slug: str, inputs: dict, *, file_source_ids=None, model=None, space_id=None, idempotency_key=None
    ):
        """`POST /v1/spaces/{space}/skills/{slug}/executions` -> SkillExecution (201)."""
        body = _request_body(
            {"inputs": inputs, "file_source_ids": file_source_ids, "model": model}, m.SkillStartRequest
        )
        path = f"/v1/spaces/{self._space(space_id)}/skills/{slug}/executions"
        return self._call(Call("POST", path, m.SkillExecution, json=body, headers=idempotency_headers(idempotency_key)))

    def list_skill_executions(self, *, state=None, skill=None, source=None, limit=None, offset=None, space_id=None):
        params = {
            k: v
            for k, v in dict(state=state, skill=skill, source=source, limit=limit, offset=offset).items()
            if v is not None
        }
        path = f"/v1/spaces/{self._space(space_id)}/skills/executions"
        return self._call(Call("GET", path, m.SkillExecutionPage, params=params, envelope=False))

    def get_skill_execution(self, execution_id: str, *, space_id=None):
        path = f"/v1/spaces/{self._space(space_id)}/skills/executions/{execution_id}"
        return self._call(Call("GET", path, m.SkillExecution))

    def cancel_skill_execution(self, execution_id: str, *, space_id=None):
        path = f"/v1/spaces/{self._space(space_id)}/skills/executions/{execution_id}/cancel"
        return self._call(Call("POST", path, m.SkillExecution))

    def skill_events(self, execution_id: str, *, after: int = 0, space_id=None):
        path = f"/v1/spaces/{self._space(space_id)}/skills/executions/{{execution_id}}/events"
        return self._stream(StreamSpec(None, execution_id=execution_id, events_path=path, last_seq=after))

    def skill_execution_by_chat_tool_call(self, tool_call_id: str, *, space_id=None):
        path = f"/v1/spaces/{self._space(space_id)}/skills/executions/by-chat-tool-call/{tool_call_id}"
        return self._call(Call("GET", path, m.SkillExecution))

    def download_artifact(self, download_url: str):
        """An artifact's bytes from its signed `download_url` (S3: through the redirect)."""
        return self._call(Call("GET", download_url, raw=True))

    def upload_file(self, filename: str, content: bytes, content_type: str = "application/octet-stream"):
        """`POST /v1/files/`: into the caller's personal collection (the same name replaces)."""
        return self._call(Call("POST", "/v1/files/", m.PersonalFile, files={"file": (filename, content, content_type)}))

    def list_files(self, *, limit=None, offset=None):
        params = {k: v for k, v in dict(limit=limit, offset=offset).items() if v is not None}
        return self._call(Call("GET", "/v1/files/", list[m.PersonalFile], params=params))

    def get_file(self, filename: str):
        return self._call(Call("GET", f"/v1/files/{filename}", m.PersonalFile))

    def delete_file(self, filename: str):
        return self._call(Call("DELETE", f"/v1/files/{filename}"))

    # --- executions query API ---

    def query_executions(self, *, page_number=None, page_size=None, responder_ids=None):
        params = {"pageNumber": page_number, "pageSize": page_size}
        params = {k: v for k, v in params.items() if v is not None}
        if responder_ids:
            params["responderIds"] = ",".join(responder_ids)
        return self._call(Call("GET", "/api/v1/executions", m.QueryExecution, params=params, query_page=True))

    def query_execution(self, execution_id: str):
        return self._call(Call("GET", f"/api/v1/executions/{execution_id}", m.QueryExecution, envelope=False))

    def query_nestings(self, *, execution_id=None, chat_message_id=None):
        params = {"executionId": execution_id} if execution_id else {"chatMessageId": chat_message_id}
        return self._call(Call("GET", "/api/v1/executions/nestings", m.QueryNesting, params=params, envelope=False))

    def purge_execution(self, execution_id: str):
        return self._call(Call("POST", f"/api/v1/executions/{execution_id}/purge", m.QueryExecution, envelope=False))


def tool_calls_awaiting(events: list[m.Event]) -> list[m.Event]:
    """The client tool calls of the latest suspension (those after the last `resumed`)."""
    pending: list[m.Event] = []
    for event in events:
        if event.type == "resumed":
            pending = []
        elif event.type == "tool_call_awaiting_client":
            pending.append(event)
    return pending


def batch_results(events: list[m.Event]) -> dict[str, m.Event]:
    """Per item key, its `batch_progress` event (status, execution id, output or error)."""
    return {e.model_extra.get("key"): e for e in events if e.type == "batch_progress" and e.model_extra.get("key")}


# operationId of /api/schema/ -> (request model, response model: of `data`, of an array's items,
# or of the SSE frames' event); checked against the schema by tests/test_python_client.py
OPERATION_MODELS: dict[str, tuple[type | None, type | None]] = {
    "agents_list": (None, m.Agent),
    "agents_execute": (m.ExecuteRequest, m.ExecuteResult),
    "agents_execute_stream": (m.ExecuteRequest, m.Event),
    "agents_execute_batch": (m.BatchRequest, m.Event),
    "attachments_upload_create": (None, m.AttachmentUpload),
    "executions_retrieve": (None, m.Execution),
    "executions_cancel_create": (None, m.Execution),
    "executions_events": (None, m.Event),
    "executions_stream_token_create": (None, m.StreamToken),
    "executions_fork_create": (m.ForkRequest, m.ForkResult),
    "executions_tool_result": (m.ToolResultRequest, m.ResumeResult),
    "executions_approval": (m.ApprovalRequest, m.ResumeResult),
    "executions_external_event": (m.ExternalEventRequest, m.ResumeResult),
    "v1_spaces_skills_executions_create": (m.SkillStartRequest, m.SkillExecution),
    "skills_executions_list": (None, m.SkillExecutionPage),
    "skills_execution_get": (None, m.SkillExecution),
    "v1_spaces_skills_executions_cancel_create": (None, m.SkillExecution),
    "skills_execution_events": (None, m.Event),
    "v1_spaces_skills_executions_by_chat_tool_call_retrieve": (None, m.SkillExecution),
    "files_upload": (None, m.PersonalFile),
    "files_list": (None, m.PersonalFile),
    "files_retrieve": (None, m.PersonalFile),
    "files_destroy": (None, None),
    "executions_api_list": (None, m.QueryExecution),
    "executions_api_get": (None, m.QueryExecution),
    "executions_api_nestings": (None, m.QueryNesting),
    "executions_api_purge": (None, m.QueryExecution),
    "agents_preview_credits_create": (m.PreviewCreditsRequest, m.PreviewCredits),
    "my_conversations_create": (m.ConversationRequest, m.Conversation),
    "my_conversations_retrieve": (None, m.Conversation),
    "my_conversations_archive_create": (None, m.Conversation),
    "my_conversations_messages_retrieve": (None, m.MessagePage),
    "my_conversations_messages_feedback_create": (m.FeedbackRequest, m.Feedback),
    "users_memory_retrieve": (None, m.MemoryFact),
    "users_memory_forget_all": (None, m.MemoryForgotten),
    "users_memory_forget_fact": (None, None),
    "v1_artifacts_download_retrieve": (None, None),
}
