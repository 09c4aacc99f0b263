"""Typed request and response models of the agents, skills and executions query APIs.

Written by hand from the OpenAPI document (`/api/schema/`); tests/test_python_client.py checks
that every operation's request and response fields, and which of them are required, agree with it.
Response models keep fields the server adds later (`extra="allow"`), so an older client still
parses a newer server; request models refuse unknown fields, so a typo fails before it is sent.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def body(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- agents API: execute ---------------------------------------------------------------------------


class Attachment(Request):
    storage_key: str
    filename: str | None = None
    content_type: str | None = None


class ClientTool(Request):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ExecuteRequest(Request):
    message: str | None = None
    attachments: list[Attachment] | None = None
    variables: dict[str, Any] | None = None
    conversation_scope: str | None = None
    external_user_id: str | None = None
    client_tools: list[ClientTool] | None = None


class BatchItem(ExecuteRequest):
    key: str


class BatchRequest(Request):
    items: list[BatchItem]


class Usage(Response):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ExecuteOutput(Response):
    text: str
    parsed_output: Any = None
    usage: Usage
    cost_microdollars: int


class ExecuteError(Response):
    code: str
    message: str


class ExecuteResult(Response):
    """`POST /agents/{id}/execute`: the outcome (200), or the status so far (202, a long run)."""

    execution_id: str
    status: str
    output: ExecuteOutput | None = None
    cost_microdollars: int | None = None
    credits_used: float | None = None
    latency_ms: int | None = None
    error: ExecuteError | None = None


class AttachmentUpload(Response):
    storage_key: str
    filename: str
    content_type: str
    size_bytes: int
    created_at: str


class StreamToken(Response):
    token: str
    expires_in: int


# --- agents API: executions and resumes ------------------------------------------------------------


class ExecutionUsage(Response):
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: str | None
    wallclock_ms: int | None
    iteration_count: int | None


class ExecutionCredits(Response):
    held: str | None
    charged: str | None


class Execution(Response):
    """`GET /executions/{id}`."""

    id: str
    state: str
    source: str
    attempt: int
    cancel_requested: bool
    parent_execution_id: str | None
    batch_key: str | None
    agent_version_id: str | None
    skill_version_id: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    usage: ExecutionUsage
    inputs: dict[str, Any]
    outputs: Any
    error: dict[str, Any] | None
    failure_reason: str | None
    credits: ExecutionCredits
    resume_deadline: str | None
    last_event_seq: int


class ToolResultRequest(Request):
    tool_call_id: str
    outcome: Literal["success", "error"] | None = None
    result: Any


class ApprovalRequest(Request):
    decision: Literal["approve", "reject"]
    comment: str | None = None


class ExternalEventRequest(Request):
    event: str
    payload: Any = None


class ResumeResult(Response):
    execution_id: str
    status: str
    pending_tool_call_ids: list[str] | None = None
    decision: str | None = None
    event: str | None = None


class ForkRequest(Request):
    from_seq: int
    model: str | None = None


class ForkResult(Response):
    execution_id: str
    status: str


class Event(Response):
    """One event of an execution's log (an SSE frame's `data`); the other members depend on `type`
    (`text`: `text`; `tool_call_awaiting_client`: `tool_call_id`, `name`, `arguments`; `final`:
    `status`, `output`, usage...; `error`: `code`, `status`), kept as extra fields."""

    type: str
    execution_id: str
    seq: int
    status: str | None = None
    text: str | None = None


# --- agents API: conversations, memory, credits ---------------------------------------------------


class Pagination(Response):
    limit: int
    offset: int
    total: int


class Agent(Response):
    id: str
    name: str
    requires_user_message: bool
    accepts_client_tools: bool
    created_at: str


class ConversationRequest(Request):
    agent_id: str


class Conversation(Response):
    id: str
    agent_id: str
    state: str
    created_at: str
    archived_at: str | None


class Message(Response):
    id: str
    role: str
    content: str
    created_at: str
    execution_id: str | None
    tool_call_id: str | None = None
    tool_name: str | None = None


class MessagePage(Response):
    data: list[Message]
    pagination: Pagination


class FeedbackRequest(Request):
    value: Literal[1, -1] | None = None


class Feedback(Response):
    message_id: str
    value: int


class MemoryFact(Response):
    id: str
    content: str
    created_at: str


class MemoryForgotten(Response):
    deleted: int


class PreviewCreditsRequest(Request):
    inputs: dict[str, Any] | None = None
    attachments: list[Any] | None = None


class PreviewCreditsRule(Response):
    name: str
    cost: float


class PreviewCredits(Response):
    agent_id: str
    base_cost: float
    rules: list[PreviewCreditsRule]
    usage_hold: float
    total: float
    balance: float | None


# --- skills API ------------------------------------------------------------------------------------


class ModelChoice(Request):
    alias: str | None = None


class SkillStartRequest(Request):
    inputs: dict[str, Any]
    file_source_ids: list[str] | None = None
    model: str | ModelChoice | None = None


class SkillResourceUsage(Response):
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: str | None
    wallclock_ms: int | None
    iteration_count: int | None


class SkillArtifact(Response):
    artifact_id: str
    relpath_in_workspace: str
    document_type: str | None
    download_url: str
    size_bytes: int | None


class SkillExecutionSummary(Response):
    id: str
    tenant_id: str
    space_id: str
    principal_id: str | None
    skill_slug: str | None
    skill_version: int | None
    source: str
    state: str
    parent_execution_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    failure_reason: str | None
    resource_usage: SkillResourceUsage


class SkillExecution(SkillExecutionSummary):
    inputs: Any
    outputs: Any
    error: Any
    artifacts: list[SkillArtifact]
    sub_executions: list[Any]
    chat_thread_id: str | None
    chat_message_id: str | None
    chat_tool_call_id: str | None
    workspace_archive_id: str | None
    langfuse_trace_id: str | None
    idempotency_key: str | None


class SkillExecutionPage(Response):
    data: list[SkillExecution]
    pagination: Pagination


class PersonalFile(Response):
    id: str
    filename: str
    size_bytes: int
    content_type: str
    created_at: str


# --- executions query API (camelCase) --------------------------------------------------------------


class QueryUsage(Response):
    input_tokens: int | None = Field(alias="inputTokens")
    output_tokens: int | None = Field(alias="outputTokens")
    total_tokens: int | None = Field(alias="totalTokens")
    cost_usd: float | None = Field(alias="costUsd")
    wallclock_ms: int | None = Field(alias="wallclockMs")
    iteration_count: int | None = Field(alias="iterationCount")


class QueryDetail(Response):
    """`detail` of a queried execution: `type` is `agent`, `skill` or `batch_item`; the ids of its
    kind (`agentId`, `skillSlug`, `batchId`, `key`...) are kept as extra fields."""

    type: str
    source: str | None
    inputs: Any
    outputs: Any
    error: Any
    failure_reason: str | None = Field(alias="failureReason")
    usage: QueryUsage | None
    chat_thread_id: str | None = Field(alias="chatThreadId")
    chat_message_id: str | None = Field(alias="chatMessageId")
    chat_tool_call_id: str | None = Field(alias="chatToolCallId")
    version_number: int | None = Field(alias="versionNumber")


class QueryExecution(Response):
    created_at: str = Field(alias="createdAt")
    id: str
    updated_at: str = Field(alias="updatedAt")
    credits_used: float | None = Field(alias="creditsUsed")
    detail: QueryDetail
    ended_at: str | None = Field(alias="endedAt")
    is_agentic: bool = Field(alias="isAgentic")
    is_purged: bool = Field(alias="isPurged")
    parent_id: str | None = Field(alias="parentId")
    responder_id: str | None = Field(alias="responderId")
    started_at: str | None = Field(alias="startedAt")
    status: str
    workspace_id: str = Field(alias="workspaceId")


class QueryNesting(QueryExecution):
    children: list["QueryNesting"]


class QueryPage(Response):
    """`GET /api/v1/executions`: the page (a JSON array) and its headers."""

    items: list[QueryExecution]
    total_count: int
    total_pages: int
    page_number: int
    page_size: int
