"""One claimed attempt of an execution, as the node types (workers/nodes.py) see it: its events,
its checkpoint (executions/checkpoints.py), model turns and server tool calls, and its ending.
The loop over the nodes is workers/runtime.py's."""

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

from accounts.models import ModelAlias
from agents.credit_rules import actual_cost
from agents.models import AgentVersion, SkillVersion
from core.connections import release_connection
from core.metrics import PROVIDER_CALLS, PROVIDER_ERRORS, PROVIDER_LATENCY, PROVIDER_TOKENS, TIME_TO_FIRST_EVENT
from executions import services
from executions.checkpoints import Checkpoint, NodeState
from executions.events import LeaseLost
from executions.models import Execution, ExecutionEvent
from workers import shutdown
from workers.event_writer import RunEvents
from workers.leases import HeldLease
from workers.outcomes import Cancelled, HandBack, StepFailed, Suspend
from workers.providers import Usage, get_provider
from workers.server_tool import ServerTool, call_tool, tool_idempotency_key
from workers.skill_finish import archive_workspace, collect_artifacts, skill_outputs
from workers.skill_workspace import SkillWorkspace
from workers.tracing import execution_trace

logger = logging.getLogger(__name__)

MICRODOLLAR = Decimal("0.000001")


def _count_tokens(labels: tuple, usage: Usage) -> None:
    for kind, tokens in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cached_input", usage.cached_input_tokens),
    ):
        if tokens:
            PROVIDER_TOKENS.labels(*labels, kind).inc(tokens)


@dataclass
class Replay:
    """What a lost attempt wrote after the checkpoint."""

    started: set = field(default_factory=set)  # node ids with a node_start
    streamed: dict = field(default_factory=dict)  # (node_id, "text" | "reasoning") -> text
    tool_calls: set = field(default_factory=set)  # tool_call ids with a tool_call event
    tool_results: dict = field(default_factory=dict)  # tool_call id -> (outcome, result)


@dataclass
class ModelTurn:
    text: str
    tool_calls: list
    provider_data: dict = field(default_factory=dict)


class ExecutionRun:
    def __init__(self, execution: Execution, attempt: int, lease: HeldLease):
        self.execution, self.attempt, self.lease = execution, attempt, lease
        self.events = RunEvents(execution, attempt)
        self.checkpoint = Checkpoint.from_json(execution.checkpoint)
        self.usage = Usage(**self.checkpoint.usage)
        self.cost = Decimal(self.checkpoint.cost_usd)
        self.replay = self._events_since_checkpoint() if attempt > 1 else Replay()
        # Celery's threads pool applies no time limit: the soft one, 60 s before the hard one (the lease
        # renewer's, workers/leases.py), is checked with cancel
        self.soft_deadline = lease.hard_deadline - 60
        self.credit_rules = {}
        self.iterations = execution.iteration_count
        self.manifest = None  # a skill's
        self.max_seconds = self.time_limit_at = None
        self.skill_workspace = SkillWorkspace(execution.id) if execution.skill_version_id else None
        self.trace = execution_trace(execution)  # Langfuse (workers/tracing.py); a no-op when off
        # the metric counts an execution's first attempt (its first claim), not a resumed or retried one
        self._time_first_event = execution.started_at == execution.updated_at and attempt == 1

    # --- events ---------------------------------------------------------------------------------

    def emit(self, type_: str, payload: dict) -> None:
        """Hand the event to the writer (workers/event_writer.py) and go on; `flush_events` waits."""
        if self._time_first_event:
            self._time_first_event = False
            TIME_TO_FIRST_EVENT.labels(self.execution.responder_type).observe(
                max(0.0, time.time() - self.execution.created_at.timestamp())
            )
        self.events.append(type_, payload)

    def flush_events(self) -> int:
        """Wait for the events handed over; returns the last seq written (LeaseLost if the lease was lost)."""
        self.events.flush()
        return self.events.last_seq

    @property
    def cancel_requested(self) -> bool:
        return self.events.cancel_requested or self.lease.cancel_requested

    def _events_since_checkpoint(self) -> Replay:
        replay = Replay()
        events = (
            ExecutionEvent.objects.filter(
                execution_id=self.execution.id,
                seq__gt=self.checkpoint.event_seq,
                type__in=["node_start", "text", "reasoning", "tool_call", "tool_result"],
            )
            .order_by("seq")
            .values_list("type", "data")
        )
        for type_, data in events:
            if type_ == "node_start":
                replay.started.add(data.get("node_id"))
            elif type_ in ("text", "reasoning"):
                key = (data.get("node_id"), type_)
                replay.streamed[key] = (
                    data["text"] if data.get("reset") else replay.streamed.get(key, "") + data["text"]
                )
            elif type_ == "tool_call":
                replay.tool_calls.add(data.get("tool_call_id"))
            else:
                replay.tool_results[data.get("tool_call_id")] = (data.get("outcome"), data.get("result"))
        return replay

    def check_cancel(self) -> None:
        """Between steps and chunks: the claim and every event written since report cancel_requested;
        a skill's `limits.max_seconds` (wallclock since it started) is checked at the same points, and
        so is the end of a shutting-down worker's grace (workers/shutdown.py; a cancel goes first)."""
        if self.events.lease_lost or self.lease.lost:
            raise LeaseLost(str(self.execution.id))
        if self.cancel_requested:
            raise Cancelled()
        if shutdown.hand_back_due():
            raise HandBack()
        if self.time_limit_at is not None and time.time() > self.time_limit_at:
            raise StepFailed("time_limit_exceeded", f"The skill ran longer than its {self.max_seconds} s limit.")
        if time.time() > self.soft_deadline:
            raise StepFailed("time_limit_exceeded", "The execution ran out of time.")

    def refresh_cancel(self) -> None:
        """While a node waits without writing events (media generation), ask the row."""
        if Execution.objects.filter(id=self.execution.id, cancel_requested=True).exists():
            self.lease.cancel_requested = True
        release_connection()
        self.check_cancel()

    # --- checkpoints ----------------------------------------------------------------------------

    def node_state(self, node: dict) -> NodeState | None:
        """The saved state of this node when the run stopped inside it (a suspension or a crash)."""
        state = self.checkpoint.node_state
        return state if state is not None and state.node_id == node["id"] else None

    def resume_input(self, node: dict):
        """The input a suspended node waited for, once the resume call stored it."""
        state = self.node_state(node)
        return self.execution.resume_input if state is not None and state.waiting else None

    def with_progress(self, checkpoint: Checkpoint) -> Checkpoint:
        """The checkpoint plus what the run has counted so far: last event seq, usage, cost."""
        return replace(checkpoint, event_seq=self.flush_events(), usage=asdict(self.usage), cost_usd=str(self.cost))

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = self.with_progress(checkpoint)
        if not services.save_checkpoint(
            self.execution.id,
            self.attempt,
            self.checkpoint,
            resume_input=None,
            iteration_count=self.iterations,
            **self.usage_fields(),
        ):
            raise LeaseLost(str(self.execution.id))
        self.execution.resume_input = None

    def save_node_state(self, node_state: NodeState) -> None:
        self.save_checkpoint(self.checkpoint.with_node_state(node_state))

    def suspend(self, suspension: Suspend) -> str:
        """Save the checkpoint with the node's state and free the worker (services.do_suspend_execution);
        a cancel requested while the run ran wins over the suspension. Returns the outcome."""
        suspended = services.do_suspend_execution(
            self.execution,
            self.attempt,
            suspension.state,
            self.with_progress(self.checkpoint.with_node_state(suspension.node_state)),
            suspension.payload,
            timeout_seconds=suspension.timeout_seconds,
            sub_execution=suspension.sub_execution,
        )
        if suspended:
            if suspension.after_suspend is not None:
                suspension.after_suspend()
            return "suspended"
        if services.do_cancel_running_execution(self.execution, self.attempt, **self.usage_fields()):
            return "cancelled"
        return "lease_lost"

    def hand_back(self) -> str:
        """The worker shuts down: the execution goes back to the queue from its last checkpoint
        (services.do_hand_back_execution); a cancel requested meanwhile wins, as over a suspension.
        Returns the outcome."""
        if services.do_hand_back_execution(self.execution, self.attempt):
            return "handed_back"
        if services.do_cancel_running_execution(self.execution, self.attempt, **self.usage_fields()):
            return "cancelled"
        return "lease_lost"

    # --- the run --------------------------------------------------------------------------------

    def workflow(self) -> list[dict]:
        """The responder's nodes: an agent version's workflow, or a skill's manifest as one ai node."""
        if self.execution.agent_version_id:
            version = AgentVersion.objects.select_related("agent").get(id=self.execution.agent_version_id)
            self.credit_rules = version.agent.credit_rules
            return version.workflow.get("nodes", [])
        if self.execution.skill_version_id:
            self.manifest = manifest = SkillVersion.objects.get(id=self.execution.skill_version_id).manifest
            self.max_seconds = manifest.get("limits", {}).get("max_seconds")
            if self.max_seconds:
                self.time_limit_at = self.execution.started_at.timestamp() + self.max_seconds
            model = self.execution.model_config or manifest.get("model") or {"provider": "builtin"}
            return [
                {
                    "id": "skill",
                    "type": "ai",
                    "instructions": manifest.get("instructions", ""),
                    "tools": manifest.get("tools", []),
                    "model": model,
                    "max_iterations": manifest.get("limits", {}).get("max_iterations", 10),
                    "prompt": "{{inputs}}",
                }
            ]
        return []

    def stage_materials(self) -> None:
        """Before a skill's first step: its file_source_ids into inputs/materials/ (missing ones reported)."""
        if self.skill_workspace is None or self.checkpoint.materials_staged:
            return
        staged, missing = self.skill_workspace.stage_materials(self.execution.principal, self.execution.file_source_ids)
        self.emit("materials_staged", {"staged": staged, "missing": missing})
        self.save_checkpoint(replace(self.checkpoint, materials_staged=True))

    def template_context(self) -> dict:
        inputs = self.execution.inputs
        return {
            "message": inputs.get("message", ""),
            "variables": inputs.get("variables", {}),
            "inputs": inputs if self.skill_workspace else {},
            "nodes": self.checkpoint.node_outputs,
        }

    # --- model turns and tools -------------------------------------------------------------------

    def stream_model(self, node: dict, messages: list[dict], tools: list[dict] | None) -> ModelTurn:
        """One model turn: text and reasoning as coalesced events; returns the text and tool calls."""
        interval = settings.TEXT_FLUSH_INTERVAL_MS / 1000
        channels = {
            kind: {"text": "", "sent": self.replay.streamed.pop((node["id"], kind), "")}
            for kind in ("text", "reasoning")
        }
        tool_calls, provider_data, last_flush = [], {}, time.monotonic()

        def flush():
            nonlocal last_flush
            last_flush = time.monotonic()
            for kind, channel in channels.items():
                text, sent = channel["text"], channel["sent"]
                if text.startswith(sent):
                    if len(text) > len(sent):
                        self.emit(kind, {"node_id": node["id"], "text": text[len(sent) :]})
                elif not sent.startswith(text):
                    self.emit(kind, {"node_id": node["id"], "text": text, "reset": True})
                else:
                    continue
                channel["sent"] = text
                # wait for the write: it reports a cancel, which must stop the stream within one chunk
                self.flush_events()

        try:
            model = self.model_for(node)
            stream = get_provider(model).stream(messages, tools)
        except ValueError as exc:  # an unknown provider
            raise StepFailed("invalid_workflow", str(exc)) from exc
        release_connection()
        provider = str(model.get("provider", "builtin"))
        labels = (provider, str(model.get("model") or provider))
        PROVIDER_CALLS.labels(*labels).inc()
        called = time.monotonic()
        with self.trace.generation(node["id"], model, messages, tools) as generation:
            try:
                for chunk in stream:
                    if chunk.kind in channels:
                        channels[chunk.kind]["text"] += chunk.text
                        if time.monotonic() - last_flush >= interval:
                            flush()
                    elif chunk.kind == "usage":
                        _count_tokens(labels, chunk.usage)
                        self.usage.input_tokens += chunk.usage.input_tokens
                        self.usage.output_tokens += chunk.usage.output_tokens
                        self.usage.cached_input_tokens += chunk.usage.cached_input_tokens
                        cost = self.price(model, chunk.usage)
                        self.cost += cost
                        generation.add_usage(chunk.usage, cost)
                        self.check_credit_limit()
                    elif chunk.kind == "provider_data":
                        provider_data.update(chunk.provider_data)
                    elif chunk.kind == "tool_call":
                        tool_calls.append(
                            {
                                "id": chunk.tool_call.get("id") or f"tc_{uuid.uuid4().hex[:16]}",
                                "name": chunk.tool_call["name"],
                                "arguments": chunk.tool_call.get("arguments") or {},
                            }
                        )
                    self.check_cancel()
            except (Cancelled, HandBack, StepFailed, LeaseLost):
                flush()
                raise
            except Exception as exc:  # the provider failed: keep what was streamed, then fail with its reason
                reason = getattr(exc, "failure_reason", "provider_error")
                PROVIDER_ERRORS.labels(*labels, reason).inc()
                flush()
                raise StepFailed(reason, str(exc)) from exc
            finally:
                stream.close()  # a cancelled or failed turn closes the upstream response at once
                PROVIDER_LATENCY.labels(*labels).observe(time.monotonic() - called)
            flush()
            generation.set_output(channels["text"]["text"], tool_calls)
        return ModelTurn(text=channels["text"]["text"], tool_calls=tool_calls, provider_data=provider_data)

    def run_server_tool(self, node: dict, tool: ServerTool | None, call: dict) -> tuple[str, object]:
        """tool_call, the call, tool_result; a result the lost attempt already logged is reused."""
        if call["id"] not in self.replay.tool_calls:
            self.emit(
                "tool_call",
                {
                    "node_id": node["id"],
                    "tool_call_id": call["id"],
                    "name": call["name"],
                    "arguments": call["arguments"],
                },
            )
        if call["id"] in self.replay.tool_results:
            return self.replay.tool_results[call["id"]]
        release_connection()
        with self.trace.tool(node["id"], call) as traced:
            key = tool_idempotency_key(self.execution.id, call["id"])
            outcome, result = call_tool(tool, call["name"], call["arguments"], key)
            traced.set_result(outcome, result)
        self.emit(
            "tool_result",
            {
                "node_id": node["id"],
                "tool_call_id": call["id"],
                "name": call["name"],
                "outcome": outcome,
                "result": result,
            },
        )
        self.check_cancel()
        return outcome, result

    # --- endings --------------------------------------------------------------------------------

    def usage_fields(self) -> dict:
        return {
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.cost_usd(),
        }

    def cost_usd(self) -> Decimal:
        """The exact sum of the calls' costs, rounded once, to the micro-dollar (half up)."""
        return self.cost.quantize(MICRODOLLAR, rounding=ROUND_HALF_UP)

    @staticmethod
    def price(model: dict, usage: Usage) -> Decimal:
        """One model call's cost from its model's prices (an alias's, or a node's `model` block):
        cached input tokens at `cached_input_usd_per_million_tokens` when given. Decimal all the way."""
        input_price = Decimal(str(model.get("input_usd_per_million_tokens", "0")))
        cached_price = Decimal(str(model.get("cached_input_usd_per_million_tokens", input_price)))
        output_price = Decimal(str(model.get("output_usd_per_million_tokens", "0")))
        cached = usage.cached_input_tokens
        return (
            (usage.input_tokens - cached) * input_price + cached * cached_price + usage.output_tokens * output_price
        ) / 1_000_000

    def model_for(self, node: dict) -> dict:
        """A node's model: its `model` block, or the workspace alias it names ({"alias": "fast"}); an
        agent execution forked onto another alias (executions/reruns.py) runs every node on that one."""
        model = node.get("model") or {}
        if self.execution.agent_version_id and self.execution.model_config:  # a fork on another alias
            model = dict(self.execution.model_config)
        if "alias" in model and "provider" not in model:
            alias = ModelAlias.objects.filter(workspace_id=self.execution.workspace_id, alias=model["alias"]).first()
            if alias is None:
                raise StepFailed("invalid_workflow", f"The workspace has no model alias {model['alias']!r}.")
            model = {**alias.config(), **{k: v for k, v in model.items() if k != "alias"}}
        if node.get("output_schema"):  # providers that support structured output use it
            model = {**model, "output_schema": node["output_schema"]}
        return model

    def usage_json(self) -> dict:
        return {
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "total_tokens": self.usage.total_tokens,
        }

    def credits_used(self) -> Decimal:
        return actual_cost(self.credit_rules, self.execution.inputs, self.usage.total_tokens)

    def check_credit_limit(self) -> None:
        """A run whose cost so far passes what was held for it is stopped."""
        if self.execution.credits_held > 0 and self.credits_used() > self.execution.credits_held:
            raise StepFailed(
                "credit_limit_exceeded",
                f"The execution would cost more than the {self.execution.credits_held} credits held for it.",
            )

    def complete(self, nodes: list[dict]) -> None:
        """The output is the last node's that has text (an ai node, or a sub-execution)."""
        outputs = self.checkpoint.node_outputs
        answer = next(
            (
                outputs[n["id"]]
                for n in reversed(nodes)
                if isinstance(outputs.get(n["id"]), dict) and "text" in outputs[n["id"]]
            ),
            {"text": ""},
        )
        output = {"text": answer["text"], "parsed_output": answer.get("parsed_output")}
        outputs, fields = output, {}
        if self.skill_workspace:
            outputs, fields = self.finish_skill(answer["text"])
        self.trace.set_output(outputs)
        latency_ms = int((time.time() - self.execution.created_at.timestamp()) * 1000)
        credits = self.credits_used() if self.execution.credits_held > 0 else Decimal(0)
        self.flush_events()
        services.do_complete_execution(
            self.execution,
            self.attempt,
            outputs=outputs,
            checkpoint=self.checkpoint,
            resume_input=None,
            final_payload={
                "output": {**output, "usage": self.usage_json()},
                "cost_microdollars": int(self.cost_usd() / MICRODOLLAR),
                "credits_used": float(credits),
                "latency_ms": latency_ms,
            },
            credits=credits,
            iteration_count=self.iterations,
            **self.usage_fields(),
            **fields,
        )

    def finish_skill(self, text: str) -> tuple[dict, dict]:
        """A skill's outputs (validated against its outputs schema), its artifacts (the files under
        outputs/) and its archived workspace."""
        outputs = skill_outputs(self.manifest, text)
        for artifact in collect_artifacts(self.execution, self.skill_workspace):
            self.emit("artifact", artifact)
        return outputs, {"workspace_archive": archive_workspace(self.execution, self.skill_workspace)}
