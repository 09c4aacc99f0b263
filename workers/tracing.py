"""Tracing executions to Langfuse: the only module that uses the Langfuse SDK.

Tracing is on when LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are all set. Off,
every call here is a no-op: the SDK is not even imported and `Execution.trace_id` stays empty.
On, nothing here raises into the runtime: a failing Langfuse call logs a warning and the run
carries on; an unreachable host costs at most the export timeout when an attempt ends.

The SDK is langfuse 5 (the OpenTelemetry-based one): observations are OTel spans, batched in the
background and sent as OTLP/HTTP protobuf to `{LANGFUSE_HOST}/api/public/otel/v1/traces`, with the
keys only in the Basic auth header. Each attempt flushes them when it ends (completed, failed,
suspended, cancelled), so a worker process that exits loses nothing.

One trace per execution; its id is the execution UUID's 32 hex digits (what `Execution.trace_id`,
the skills API's `langfuse_trace_id`, holds), so every attempt of an execution (a retry after a lost
lease, the resume after a suspension) adds to the same trace:
- each attempt: a root `agent` observation `attempt N` (the inputs, or what it resumed with; the
  outcome; the output);
- each model call: a `generation` (model, input messages, output text and tool calls, usage in
  input / cached input / output tokens, cost in USD);
- each server tool call: a `tool` observation (arguments, outcome, result);
- each sub-execution started: a `span` in the parent's trace naming the child execution and its
  trace; the child's own trace has `parent_execution_id` and `parent_trace_id` in its metadata.
The trace's name (`agent: <name>` / `skill: <slug>`), session (the conversation scope or chat
thread), user (`external_user_id`), tags and metadata are propagated to every observation.
Secrets never go in: model options are reduced to a few parameters, provider keys are never in
them, and the Langfuse secret only reaches the SDK (warnings here have it redacted).
"""

import functools
import logging
import threading
from contextlib import ExitStack, contextmanager
from decimal import Decimal

from django.conf import settings

from agents.models import AgentVersion, SkillVersion
from executions.events import LeaseLost
from executions.models import Execution
from workers.outcomes import Cancelled, HandBack, StepFailed, Suspend

logger = logging.getLogger(__name__)

# Per export request (the SDK retries within it); also the most that flushing an attempt's
# observations to an unreachable host takes.
EXPORT_TIMEOUT_SECONDS = 5
# Model options worth seeing in a generation; nothing else of a model block is sent.
MODEL_PARAMETERS = ("temperature", "max_tokens", "thinking_budget_tokens")
MAX_ATTRIBUTE_CHARS = 200  # Langfuse drops longer propagated trace attributes

_clients: dict = {}
_clients_lock = threading.Lock()


def _config() -> tuple[str, str, str] | None:
    host = getattr(settings, "LANGFUSE_HOST", "") or ""
    public_key = getattr(settings, "LANGFUSE_PUBLIC_KEY", "") or ""
    secret_key = getattr(settings, "LANGFUSE_SECRET_KEY", "") or ""
    if host and public_key and secret_key:
        return host.rstrip("/"), public_key, secret_key
    return None


def enabled() -> bool:
    return _config() is not None


def _redact(text: str) -> str:
    secret = getattr(settings, "LANGFUSE_SECRET_KEY", "")
    return text.replace(secret, "***") if secret else text


def _warn(what: str, exc: BaseException) -> None:
    logger.warning("Langfuse tracing: %s failed, carrying on: %s", what, _redact(f"{type(exc).__name__}: {exc}"))


def _client():
    """The process's Langfuse client for the current settings (created on first use, after a
    Celery worker forked). None when tracing is off or the client cannot be created."""
    config = _config()
    if config is None:
        return None
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            try:
                # the SDK is imported on first use only, so with tracing off it is never loaded (no cycle here)
                from langfuse import Langfuse
                from opentelemetry.sdk.trace import TracerProvider

                for old in _clients.values():  # the settings changed (tests): retire the old client
                    old.shutdown()
                _clients.clear()
                host, public_key, secret_key = config
                # Its own TracerProvider: the process's global OpenTelemetry provider is left alone.
                # (The SDK keeps one client per public key: a new host needs a new key in the same process.)
                client = Langfuse(
                    base_url=host,
                    public_key=public_key,
                    secret_key=secret_key,
                    timeout=EXPORT_TIMEOUT_SECONDS,
                    tracer_provider=TracerProvider(),
                )
            except Exception as exc:
                _warn("creating the client", exc)
                return None
            _clients[config] = client
        return client


def _guarded(method):
    """A tracing step that logs a warning instead of raising into the runtime."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            _warn(f"{method.__name__.strip('_')} of execution {self.execution.id}", exc)
            return None

    return wrapper


def _short(value) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= MAX_ATTRIBUTE_CHARS else None


class ModelCall:
    """What one model call reports for its generation: usage and cost as they stream, then the answer."""

    def __init__(self):
        self.input_tokens = self.output_tokens = self.cached_input_tokens = 0
        self.cost = Decimal(0)
        self.text, self.tool_calls = None, None

    def add_usage(self, usage, cost: Decimal) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.cost += cost

    def set_output(self, text: str, tool_calls: list) -> None:
        self.text, self.tool_calls = text, tool_calls

    def usage_details(self) -> dict:
        """Langfuse usage types: `input` (not from the cache), `input_cached_tokens`, `output`, `total`."""
        details = {
            "input": self.input_tokens - self.cached_input_tokens,
            "output": self.output_tokens,
            "total": self.input_tokens + self.output_tokens,
        }
        if self.cached_input_tokens:
            details["input_cached_tokens"] = self.cached_input_tokens
        return details


class ToolCall:
    """What one server tool call returned, for its observation."""

    def __init__(self):
        self.outcome, self.result = None, None

    def set_result(self, outcome: str, result) -> None:
        self.outcome, self.result = outcome, result


def _status(exc: BaseException | None) -> tuple[str, str, str | None]:
    """(outcome, Langfuse level, status message) of an attempt or a step that ended with `exc`."""
    if exc is None:
        return "completed", "DEFAULT", None
    if isinstance(exc, Suspend):
        return "suspended", "DEFAULT", f"suspended: {exc.state}"
    if isinstance(exc, Cancelled):
        return "cancelled", "WARNING", "cancelled"
    if isinstance(exc, HandBack):
        return "handed_back", "DEFAULT", "the worker shut down; another attempt continues"
    if isinstance(exc, LeaseLost):
        return "lease_lost", "WARNING", "the lease was lost; another attempt continues"
    if isinstance(exc, StepFailed):
        return "failed", "ERROR", f"{exc.failure_reason}: {exc.message}"
    return "failed", "ERROR", f"internal_error: {type(exc).__name__}"


class ExecutionTrace:
    """One attempt of one execution in the execution's trace. `with trace:` around the attempt's run
    opens its root observation; the model calls, tool calls and sub-executions inside it are
    recorded under it; `flush()` sends everything once the attempt's outcome is stored.

    Without a client (tracing off, or Langfuse failed to start) every method does nothing."""

    def __init__(self, client, execution: Execution):
        self.client, self.execution = client, execution
        self.trace_id = execution.id.hex if client is not None else ""
        self.root = None
        self.output = None
        self._stack = ExitStack()

    # --- the attempt ----------------------------------------------------------------------------

    def __enter__(self):
        if self.client is not None:
            if self.execution.trace_id != self.trace_id:
                Execution.objects.filter(id=self.execution.id).update(trace_id=self.trace_id)
                self.execution.trace_id = self.trace_id
            self._start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.root is not None:
            self._end(exc)
        return False

    @_guarded
    def _start(self):
        from langfuse import propagate_attributes  # loaded by _client already: tracing is on here

        execution = self.execution
        resumed = bool(execution.checkpoint)
        self.root = self._stack.enter_context(
            self.client.start_as_current_observation(
                trace_context={"trace_id": self.trace_id},
                name=f"attempt {execution.attempt}",
                as_type="agent",
                input=execution.inputs if execution.resume_input is None else {"resumed_with": execution.resume_input},
                metadata={"attempt": execution.attempt, "resumed": resumed},
            )
        )
        inputs = execution.inputs if isinstance(execution.inputs, dict) else {}
        metadata = {
            "execution_id": str(execution.id),
            "workspace_id": str(execution.workspace_id),
            "source": execution.source,
        }
        tags = ["agent" if execution.agent_version_id else "skill"]
        if execution.parent_id:
            metadata.update(parent_execution_id=str(execution.parent_id), parent_trace_id=execution.parent_id.hex)
            tags.append("sub_execution")
        self._stack.enter_context(
            propagate_attributes(
                trace_name=self._trace_name()[:MAX_ATTRIBUTE_CHARS],
                session_id=_short(inputs.get("conversation_scope")) or _short(execution.chat_thread_id),
                user_id=_short(inputs.get("external_user_id")),
                tags=tags,
                metadata=metadata,
            )
        )

    def _trace_name(self) -> str:
        if self.execution.agent_version_id:
            version = AgentVersion.objects.select_related("agent").get(id=self.execution.agent_version_id)
            return f"agent: {version.agent.name}"
        if self.execution.skill_version_id:
            version = SkillVersion.objects.select_related("skill").get(id=self.execution.skill_version_id)
            return f"skill: {version.skill.slug}"
        return "execution"

    def set_output(self, output) -> None:
        """The execution's outputs, for the attempt that completes it."""
        self.output = output

    def _end(self, exc: BaseException | None) -> None:
        try:
            outcome, level, status = _status(exc)
            self.root.update(output=self.output, level=level, status_message=status, metadata={"outcome": outcome})
        except Exception as error:
            _warn(f"ending the trace of execution {self.execution.id}", error)
        try:
            self._stack.close()  # ends the root observation and restores the context
        except Exception as error:
            _warn(f"closing the trace of execution {self.execution.id}", error)
        self.root = None

    def flush(self) -> None:
        """Send what this attempt recorded (the end of every attempt, whatever its outcome)."""
        if self.client is None:
            return
        try:
            self.client.flush()
        except Exception as exc:
            _warn(f"flushing the trace of execution {self.execution.id}", exc)

    # --- steps ----------------------------------------------------------------------------------

    @contextmanager
    def generation(self, node_id: str, model: dict, messages: list[dict], tools: list[dict] | None):
        """One model call: yields a ModelCall that the caller fills in as the answer streams."""
        call = ModelCall()
        observation = self._start_generation(node_id, model, messages, tools)
        try:
            yield call
        except BaseException as exc:
            self._finish(observation, exc=exc, output=self._model_output(call), **self._usage(call))
            raise
        self._finish(observation, output=self._model_output(call), **self._usage(call))

    @_guarded
    def _start_generation(self, node_id, model, messages, tools):
        if self.root is None:
            return None
        return self.root.start_observation(
            name=node_id,
            as_type="generation",
            model=str(model.get("model") or model.get("provider") or "builtin"),
            model_parameters={
                key: model[key] for key in MODEL_PARAMETERS if isinstance(model.get(key), (int, float, str))
            }
            or None,
            input=messages,
            metadata={
                "node_id": node_id,
                "provider": model.get("provider", "builtin"),
                "tools": [tool["name"] for tool in tools or []],
            },
        )

    @staticmethod
    def _model_output(call: ModelCall):
        if call.text is None or not call.tool_calls:
            return call.text
        return {"role": "assistant", "content": call.text, "tool_calls": call.tool_calls}

    @staticmethod
    def _usage(call: ModelCall) -> dict:
        return {"usage_details": call.usage_details(), "cost_details": {"total": float(call.cost)}}

    @contextmanager
    def tool(self, node_id: str, call: dict):
        """One server tool call: yields a ToolCall that the caller gives the outcome and result."""
        done = ToolCall()
        observation = self._start_tool(node_id, call)
        try:
            yield done
        except BaseException as exc:
            self._finish(observation, exc=exc)
            raise
        error = done.outcome == "error"
        self._finish(
            observation,
            output=done.result,
            metadata={"outcome": done.outcome},
            level="ERROR" if error else None,
            status_message="the tool returned an error" if error else None,
        )

    @_guarded
    def _start_tool(self, node_id, call):
        if self.root is None:
            return None
        return self.root.start_observation(
            name=call["name"],
            as_type="tool",
            input=call["arguments"],
            metadata={"node_id": node_id, "tool_call_id": call["id"]},
        )

    @_guarded
    def sub_execution(self, node_id: str, child_id, responder: str, inputs) -> None:
        """A child execution starts: a span here that names it and its own trace."""
        if self.root is None:
            return
        self.root.start_observation(
            name=f"sub-execution {responder}",
            as_type="span",
            input=inputs,
            metadata={"node_id": node_id, "sub_execution_id": str(child_id), "sub_trace_id": child_id.hex},
        ).end()

    @_guarded
    def _finish(self, observation, exc: BaseException | None = None, **fields) -> None:
        if observation is None:
            return
        if exc is not None:
            outcome, fields["level"], fields["status_message"] = _status(exc)
            fields["metadata"] = {**fields.get("metadata", {}), "outcome": outcome}
        observation.update(**{key: value for key, value in fields.items() if value is not None})
        observation.end()


def execution_trace(execution: Execution) -> ExecutionTrace:
    """The trace of one attempt of `execution` (a no-op one when tracing is off)."""
    return ExecutionTrace(_client(), execution)
