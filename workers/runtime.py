"""The durable runtime: run one claimed execution step by step.

A step is one workflow node. A node may suspend the execution (`wait_event` waits for an external
event): the checkpoint is saved, the worker freed, and the resume call re-queues it. After every step the checkpoint (next node, node outputs, usage) is
saved, fenced by the attempt number; a retried attempt (the reaper re-queued it after its worker
died) starts from that checkpoint. While a node streams, the text already in the event log for
that node is not sent again: the built-in model is deterministic, so the client's concatenated
text stays exact; a provider that answers differently on retry gets a `text` event with
`"reset": true` carrying the node's whole text so far.
"""

import logging
import os
import socket
import threading
import time
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection

from executions import services
from executions.events import LeaseLost, append_event
from agents.credit_rules import actual_cost
from agents.models import AgentVersion
from executions.models import Execution, ExecutionEvent, ExecutionState
from workers.providers import Usage, get_provider

logger = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Cancelled(Exception):
    pass


class Suspend(Exception):
    """The node waits for input from outside: save the checkpoint and free the worker."""

    def __init__(self, state: str, payload: dict):
        super().__init__(state)
        self.state, self.payload = state, payload


class StepFailed(Exception):
    def __init__(self, failure_reason: str, message: str):
        super().__init__(message)
        self.failure_reason, self.message = failure_reason, message


class LeaseKeeper(threading.Thread):
    """Renews the lease every third of its length until stopped or lost.

    A lost lease needs no signal here: the run's next write is fenced by its attempt and fails."""

    def __init__(self, execution_id, attempt: int):
        super().__init__(daemon=True, name=f"lease-{execution_id}")
        self.execution_id, self.attempt = execution_id, attempt
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.wait(settings.EXECUTION_LEASE_SECONDS / 3):
                if not services.renew_lease(self.execution_id, self.attempt):
                    return
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()


class ExecutionRun:
    def __init__(self, execution: Execution, attempt: int):
        self.execution, self.attempt = execution, attempt
        self.checkpoint = execution.checkpoint or {"next_node": 0, "node_outputs": {}, "usage": {}}
        self.usage = Usage(**self.checkpoint.get("usage", {}))
        self.replay = self._events_of_earlier_attempts() if attempt > 1 else {}
        self.cancel_requested = execution.cancel_requested
        self.credit_rules = {}

    # --- events ---------------------------------------------------------------------------------

    def emit(self, type_: str, payload: dict) -> None:
        result = append_event(self.execution, type_, payload, attempt=self.attempt)
        self.cancel_requested = self.cancel_requested or result.cancel_requested

    def _events_of_earlier_attempts(self) -> dict:
        """Per node: whether node_start was logged, and the text already streamed."""
        replay = {}
        for type_, data in ExecutionEvent.objects.filter(
            execution_id=self.execution.id, type__in=["node_start", "text"]
        ).order_by("seq").values_list("type", "data"):
            node = replay.setdefault(data.get("node_id"), {"started": False, "text": ""})
            if type_ == "node_start":
                node["started"] = True
            else:
                node["text"] = data["text"] if data.get("reset") else node["text"] + data["text"]
        return replay

    def check_cancel(self) -> None:
        """Between steps: the claim and every event written since report cancel_requested."""
        if self.cancel_requested:
            raise Cancelled()

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        version = AgentVersion.objects.select_related("agent").filter(id=self.execution.agent_version_id).first()
        nodes = version.workflow["nodes"] if version else []
        self.credit_rules = version.agent.credit_rules if version else {}
        if not nodes:
            raise StepFailed("invalid_workflow", "The responder has no workflow nodes to run.")
        for index in range(self.checkpoint["next_node"], len(nodes)):
            self.check_cancel()
            node = nodes[index]
            if not self.replay.get(node["id"], {}).get("started"):
                self.emit("node_start", {"node_id": node["id"], "node_type": node.get("type")})
            output = self.run_node(node)
            self.emit("node_complete", {"node_id": node["id"], "node_type": node["type"]})
            self.checkpoint = {
                "next_node": index + 1,
                "node_outputs": {**self.checkpoint["node_outputs"], node["id"]: output},
                "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens},
            }
            if not services.save_checkpoint(self.execution.id, self.attempt, self.checkpoint, resume_input=None,
                                            iteration_count=index + 1, **self.usage_fields()):
                raise LeaseLost(str(self.execution.id))
        self.complete(self.checkpoint["node_outputs"][nodes[-1]["id"]])

    def run_node(self, node: dict):
        if node.get("type") == "wait_event":
            return self.wait_for_external_event(node)
        if node.get("type") != "ai":
            raise StepFailed("unsupported_node", f"Node type {node.get('type')!r} is not supported.")
        replayed = self.replay.get(node["id"], {"started": False, "text": ""})
        messages = [{"role": "user", "content": self.execution.inputs.get("message", "")}]
        if node.get("instructions"):
            messages.insert(0, {"role": "system", "content": node["instructions"]})
        return self.stream_model(node, messages, sent=replayed["text"])

    def wait_for_external_event(self, node: dict):
        """Suspend until the resume call stores the event; its payload is the node's output."""
        if self.checkpoint.get("waiting_on") == node["id"] and self.execution.resume_input is not None:
            return self.execution.resume_input
        self.checkpoint = {**self.checkpoint, "waiting_on": node["id"]}
        raise Suspend(ExecutionState.WAITING_FOR_EXTERNAL_EVENT, {"node_id": node["id"], "event": node.get("event")})

    def stream_model(self, node: dict, messages: list[dict], sent: str) -> str:
        """Stream the model's text as coalesced `text` events; return the whole text."""
        interval = settings.TEXT_FLUSH_INTERVAL_MS / 1000
        text, last_flush = "", time.monotonic()

        def flush():
            nonlocal sent, last_flush
            last_flush = time.monotonic()
            if text.startswith(sent):
                if len(text) > len(sent):
                    self.emit("text", {"node_id": node["id"], "text": text[len(sent):]})
            elif not sent.startswith(text):
                self.emit("text", {"node_id": node["id"], "text": text, "reset": True})
            else:
                return
            sent = text

        try:
            for chunk in get_provider(node.get("model", {})).stream(messages):
                if chunk.kind == "text":
                    text += chunk.text
                    if time.monotonic() - last_flush >= interval:
                        flush()
                elif chunk.kind == "usage":
                    self.usage.input_tokens += chunk.usage.input_tokens
                    self.usage.output_tokens += chunk.usage.output_tokens
                    self.check_credit_limit()
                elif chunk.kind == "tool_call":
                    raise StepFailed("unsupported_tool_call", "This node cannot call tools.")
                if self.cancel_requested:
                    raise Cancelled()
        except (Cancelled, StepFailed, LeaseLost, SoftTimeLimitExceeded):
            flush()
            raise
        except Exception as exc:  # the provider failed: keep what was streamed, then fail
            flush()
            raise StepFailed("provider_error", str(exc)) from exc
        flush()
        return text

    # --- endings --------------------------------------------------------------------------------

    def usage_fields(self) -> dict:
        return {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens}

    def usage_json(self) -> dict:
        return {**self.usage_fields(), "total_tokens": self.usage.total_tokens}

    def credits_used(self) -> Decimal:
        return actual_cost(self.credit_rules, self.execution.inputs, self.usage.total_tokens)

    def check_credit_limit(self) -> None:
        """A run whose cost so far passes what was held for it is stopped."""
        if self.execution.credits_held > 0 and self.credits_used() > self.execution.credits_held:
            raise StepFailed("credit_limit_exceeded",
                             f"The execution would cost more than the {self.execution.credits_held} credits held for it.")

    def complete(self, text: str) -> None:
        latency_ms = int((time.time() - self.execution.created_at.timestamp()) * 1000)
        credits = self.credits_used() if self.execution.credits_held > 0 else Decimal(0)
        services.complete_execution(
            self.execution, self.attempt, outputs={"text": text},
            final_payload={"output": {"text": text, "usage": self.usage_json()}, "cost_microdollars": 0,
                           "credits_used": float(credits), "latency_ms": latency_ms},
            credits=credits, **self.usage_fields(),
        )


def run_execution(execution_id) -> str:
    """Claim and run one execution; returns what happened (for logs and tests)."""
    execution = services.claim_execution(execution_id, worker_id())
    if execution is None:
        return "not_claimed"
    attempt = execution.attempt
    keeper = LeaseKeeper(execution.id, attempt)
    keeper.start()
    run = ExecutionRun(execution, attempt)
    try:
        run.run()
        return "completed"
    except Suspend as suspension:
        services.suspend_execution(execution, attempt, suspension.state, run.checkpoint, suspension.payload)
        return "suspended"
    except Cancelled:
        services.cancel_running_execution(execution, attempt, **run.usage_fields())
        return "cancelled"
    except StepFailed as exc:
        services.fail_execution(execution, attempt, exc.failure_reason, exc.message, **run.usage_fields())
        return "failed"
    except LeaseLost:
        logger.warning("execution %s: lease of attempt %s lost, stopping", execution_id, attempt)
        return "lease_lost"
    except SoftTimeLimitExceeded:
        services.fail_execution(execution, attempt, "time_limit_exceeded", "The execution ran out of time.",
                                **run.usage_fields())
        return "failed"
    except Exception as exc:
        logger.exception("execution %s failed", execution_id)
        services.fail_execution(execution, attempt, "internal_error", f"Internal error: {type(exc).__name__}",
                                **run.usage_fields())
        return "failed"
    finally:
        keeper.stop()
