"""The durable runtime: run one claimed execution node by node.

After every step (a node, or one model turn of an `ai` node) the checkpoint (executions/checkpoints.py)
is saved, fenced by the attempt number: the next node, the node outputs, the usage, the in-progress
node's state (its message history, pending client tool calls, a media job) and the seq of the last
event written. The ExecutionRun (workers/run.py) is what the node types see of the attempt.
A node may suspend the execution (client tools, human gate, external event, sub-execution): the
checkpoint is saved, the worker freed, and the resume call stores the input and re-queues it.

A retried attempt (the reaper re-queued it after its worker died) starts from the checkpoint and
reads the events the lost attempt wrote after it, so nothing reaches the client twice: text
already streamed is not sent again (the built-in model is deterministic; a provider that answers
differently gets a `text` event with `"reset": true` carrying the whole text so far), and a
server tool whose result is logged is not run again. So does the attempt after a hand-back: a worker
that shuts down stops its runs at their next step or chunk and queues them again from their
checkpoint (workers/shutdown.py).
"""

import logging
import os
import socket
import time
from dataclasses import replace

from django.conf import settings
from django.db import InterfaceError, OperationalError

from core.connections import release_connection
from core.metrics import EXECUTION_ATTEMPTS, LEASE_LOSSES, QUEUE_WAIT, RUN_TIME
from core.structured_logs import bind_context, reset_context
from executions import fairness, services
from executions.events import LeaseLost
from workers import shutdown
from workers.leases import hold_lease, release_lease
from workers.nodes import run_node
from workers.outcomes import Cancelled, HandBack, StepFailed, Suspend
from workers.run import ExecutionRun

logger = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_nodes(run: ExecutionRun) -> None:
    """The responder's nodes from the checkpoint's next one; the last one's end completes the run."""
    nodes = run.workflow()
    if not nodes:
        raise StepFailed("invalid_workflow", "The responder has no workflow nodes to run.")
    if run.skill_workspace:
        run.emit("state_changed", {"state": "running", "attempt": run.attempt})
    run.stage_materials()
    for index in range(run.checkpoint.next_node, len(nodes)):
        run.check_cancel()
        node = nodes[index]
        if node["id"] not in run.replay.started and run.node_state(node) is None:
            run.emit("node_start", {"node_id": node["id"], "node_type": node.get("type")})
        output = run_node(run, node)
        if node["type"] != "ai":  # an ai node counts its model turns itself
            run.iterations += 1
        run.emit("node_complete", {"node_id": node["id"], "node_type": node["type"]})
        checkpoint = replace(
            run.checkpoint,
            next_node=index + 1,
            node_outputs={**run.checkpoint.node_outputs, node["id"]: output},
            node_state=None,
        )
        if index + 1 < len(nodes):
            run.save_checkpoint(checkpoint)
        else:  # the last checkpoint is written by the final transition
            run.checkpoint = run.with_progress(checkpoint)
    run.complete(nodes)


def _after_events(run: ExecutionRun, outcome: str | None, transition, *args, **kwargs) -> str:
    """The transition that ends or suspends the attempt, once its events are written (so its own
    event comes after them); nothing if the lease was lost meanwhile. `outcome` None: the
    transition returns it."""
    try:
        run.flush_events()
        result = transition(*args, **kwargs)
    except LeaseLost:
        return "lease_lost"
    return outcome or result


def run_execution(execution_id) -> str:
    """Claim and run one execution; returns what happened (for logs and tests).

    While it runs, its log lines carry execution_id, attempt and workspace_id (core/structured_logs);
    its end is one log line and a few counters (core/metrics), nothing that queries."""
    if shutdown.stopping():
        # Race: Celery stops consuming only at its loop's next turn after SIGTERM, so a message can
        # still be delivered here. Not claimed: published again for another worker, then acked (on the
        # resumes queue: whether a first run or a resume, someone may be waiting for it already).
        services.publish_task(execution_id, queue=settings.RESUMES_QUEUE, priority=fairness.RESUME)
        logger.info("execution %s: worker shutting down, left to another worker", execution_id)
        return "not_claimed"
    execution = services.do_claim_execution(execution_id, worker_id())
    if execution is None:
        return "not_claimed"
    claimed = time.monotonic()
    responder_type = execution.responder_type
    if execution.started_at == execution.updated_at:  # its first claim (started_at is set once)
        QUEUE_WAIT.labels(responder_type).observe(
            max(0.0, (execution.started_at - execution.created_at).total_seconds())
        )
    context = bind_context(
        execution_id=str(execution.id), attempt=execution.attempt, workspace_id=str(execution.workspace_id)
    )
    outcome = "failed"
    try:
        outcome = _run_claimed(execution)
        return outcome
    finally:
        seconds = time.monotonic() - claimed
        EXECUTION_ATTEMPTS.labels(responder_type, outcome).inc()
        RUN_TIME.labels(responder_type, outcome).observe(seconds)
        if outcome == "lease_lost":
            LEASE_LOSSES.inc()
        logger.info("execution attempt ended", extra={"outcome": outcome, "duration_ms": round(seconds * 1000, 1)})
        reset_context(context)


def _run_claimed(execution) -> str:
    execution_id = execution.id
    attempt = execution.attempt
    lease = hold_lease(execution, attempt)
    run = None
    try:
        run = ExecutionRun(execution, attempt, lease)
        with run.trace:  # the attempt's root observation in the execution's trace, ended with its outcome
            run_nodes(run)
        return "completed"
    except Suspend as suspension:
        return _after_events(run, None, run.suspend, suspension)
    except HandBack:
        logger.warning("execution %s: worker shutting down, attempt %s handed back", execution_id, attempt)
        return _after_events(run, None, run.hand_back)
    except Cancelled:
        return _after_events(
            run, "cancelled", services.do_cancel_running_execution, execution, attempt, **run.usage_fields()
        )
    except StepFailed as exc:
        return _after_events(
            run,
            "failed",
            services.do_fail_execution,
            execution,
            attempt,
            exc.failure_reason,
            exc.message,
            **run.usage_fields(),
        )
    except LeaseLost:
        logger.warning("execution %s: lease of attempt %s lost, stopping", execution_id, attempt)
        return "lease_lost"
    except (OperationalError, InterfaceError):
        # The database failed under the run, not the run itself: a PostgreSQL restart behind PgBouncer
        # ends a live connection's statement with an error (the pooler keeps the client connection), and
        # a deadlock or a lost connection may strike any run. The attempt stops as after a lost lease:
        # its lease is no longer renewed and the reaper queues it again from its checkpoint (counted in
        # EXECUTION_MAX_ATTEMPTS, so an error that repeats still ends the execution).
        logger.warning("execution %s: attempt %s interrupted by a database error", execution_id, attempt, exc_info=True)
        return "interrupted"
    except Exception as exc:
        logger.exception("execution %s failed", execution_id)
        usage = {}
        if run:
            usage = run.usage_fields()
            try:
                run.flush_events()
            except Exception:  # the events' own failure: the error event still goes out
                pass
        services.do_fail_execution(
            execution, attempt, "internal_error", f"Internal error: {type(exc).__name__}", **usage
        )
        return "failed"
    finally:
        release_lease(lease)
        if run:
            run.trace.flush()  # after the outcome is stored: a worker that exits now loses no observation
        release_connection()
