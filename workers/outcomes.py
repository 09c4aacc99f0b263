"""How a step of a run ends other than with its output: the node types raise these, the run loop
(workers/runtime.py) turns them into the execution's transition, tracing names them."""

from collections.abc import Callable
from dataclasses import replace

from executions.checkpoints import NodeState


class Cancelled(Exception):
    pass


class HandBack(Exception):
    """The worker is shutting down and the run's grace is over: stop here and give the execution
    back, queued from its checkpoint, to another worker (workers/shutdown.py)."""


class Suspend(Exception):
    """The node waits for input from outside: save the checkpoint and free the worker.

    `payload` is the `suspended` event's (None: an internal wait, no event); once `timeout_seconds`
    have passed, the reaper resumes the node with its state's `input_on_timeout()`; `sub_execution`
    is the child to create in the same transaction; `after_suspend` runs once the suspension is
    committed (a media wait resumes itself there when its webhook came meanwhile)."""

    def __init__(
        self,
        state: str,
        payload: dict | None,
        node_state: NodeState,
        timeout_seconds: float | None = None,
        sub_execution: dict | None = None,
        after_suspend: Callable[[], object] | None = None,
    ):
        super().__init__(state)
        self.state, self.payload, self.node_state = state, payload, replace(node_state, waiting=True)
        self.timeout_seconds, self.sub_execution = timeout_seconds, sub_execution
        self.after_suspend = after_suspend


class StepFailed(Exception):
    def __init__(self, failure_reason: str, message: str):
        super().__init__(message)
        self.failure_reason, self.message = failure_reason, message
