"""The checkpoint of a run: the one written contract between the runtime (workers/), which saves it
after every step, and the execution core (executions/), which reads what a suspended execution
waits for (a resume endpoint, a finished child, the reaper's timeouts).

Dataclasses, not pydantic models: the runtime mutates a node's state in place on its hot path (each
model turn appends to the message history, and the state is saved after each turn), and this code
is the only writer, so validation is only needed where the JSON is read back, in `from_json`, which
also reads the previous format. Stored in `Execution.checkpoint` (a JSON column) as a superset of
that format's keys (`version` and the node state's `kind` are added), so a worker still on the
previous code reads a checkpoint written by this one.

Versions: 1 is the unversioned dict written before this module (its node state is typed by its
keys), 2 adds `version` and `kind`.
"""

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

CHECKPOINT_VERSION = 2


class CheckpointError(ValueError):
    """A stored checkpoint this code cannot read (a newer version, an unknown node state)."""


@dataclass(kw_only=True)
class NodeState:
    """The state of the node a run stopped in (a suspension, or a crash between two of its steps).

    `waiting`: the node is suspended; the execution's `resume_input` is the input it waits for. Used
    as such only for a previous-format state with no state of its own (nothing but its node id)."""

    kind: ClassVar[str] = "node"
    node_id: str
    waiting: bool = False

    def pending_tool_call_ids(self) -> list[str]:
        return []

    def expected_event(self) -> str | None:
        return None

    def input_on_timeout(self) -> dict | None:
        """The resume input the reaper gives the node once its timeout passed."""
        return None

    def waits_for_sub_execution(self, child_id: str) -> bool:
        return False

    def media_request_id(self) -> str | None:
        """The provider job a suspended media node waits for (executions/media_requests.py)."""
        return None

    def to_json(self) -> dict:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(kw_only=True)
class ModelTurns(NodeState):
    """An `ai` node between model turns. `pending`: the client tool calls of the last turn, waiting
    for their results (awaiting_client_tool); `skill_calls`: skills the model called, run one by
    one as sub-executions, the first one as `sub_execution_id` (waiting_for_sub_execution)."""

    kind: ClassVar[str] = "ai"
    messages: list = field(default_factory=list)
    turns: int = 0
    pending: list = field(default_factory=list)
    skill_calls: list = field(default_factory=list)
    sub_execution_id: str | None = None

    def pending_tool_call_ids(self) -> list[str]:
        return [call["id"] for call in self.pending]

    def waits_for_sub_execution(self, child_id: str) -> bool:
        return self.sub_execution_id == child_id


@dataclass(kw_only=True)
class ApprovalGate(NodeState):
    """A `human_gate` node awaiting its decision; `timeout_input` is its default decision."""

    kind: ClassVar[str] = "human_gate"
    timeout_input: dict | None = None

    def input_on_timeout(self) -> dict | None:
        return self.timeout_input


@dataclass(kw_only=True)
class EventWait(NodeState):
    """A `wait_event` node waiting for `event` (any event when None)."""

    kind: ClassVar[str] = "wait_event"
    event: str | None = None
    timeout_input: dict | None = None

    def expected_event(self) -> str | None:
        return self.event

    def input_on_timeout(self) -> dict | None:
        return self.timeout_input


@dataclass(kw_only=True)
class MediaJob(NodeState):
    """A `media_generation` node's submitted job, polled again by a retried attempt. A job of a
    provider that calls back (Fal.ai: its `request_id`) suspends the node until its webhook, or
    until the timeout after which the reaper resumes the node to poll it."""

    kind: ClassVar[str] = "media_generation"
    job: dict
    submitted_at: float

    def media_request_id(self) -> str | None:
        return self.job.get("request_id") if self.waiting else None

    def input_on_timeout(self) -> dict | None:
        request_id = self.media_request_id()
        return {"media_request_id": request_id, "poll": True} if request_id else None


@dataclass(kw_only=True)
class SubExecutionWait(NodeState):
    """An `agent` or `skill` node waiting for its child execution (a batch's items are no node's:
    the batch row's source says it waits for them)."""

    kind: ClassVar[str] = "sub_execution"
    sub_execution_id: str

    def waits_for_sub_execution(self, child_id: str) -> bool:
        return self.sub_execution_id == child_id


NODE_STATES = {cls.kind: cls for cls in (NodeState, ModelTurns, ApprovalGate, EventWait, MediaJob, SubExecutionWait)}


def _previous_kind(data: dict) -> str:
    """A version 1 node state, typed by the keys each node wrote."""
    if "messages" in data or "pending" in data or "skill_calls" in data:
        return ModelTurns.kind
    if "job" in data:
        return MediaJob.kind
    if "event" in data:
        return EventWait.kind
    if "timeout_input" in data:
        return ApprovalGate.kind
    if "sub_execution_id" in data:
        return SubExecutionWait.kind
    return NodeState.kind


def node_state_from_json(data: dict) -> NodeState:
    cls = NODE_STATES.get(data.get("kind") or _previous_kind(data))
    if cls is None:
        raise CheckpointError(f"unknown node state kind {data.get('kind')!r}")
    values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise CheckpointError(f"invalid {cls.kind} node state: {exc}") from exc


@dataclass
class Checkpoint:
    """Where a run is: the next node, the outputs of the nodes done, the usage and cost so far, the
    seq of the last event written, whether a skill's materials were staged, and the state of the
    node it stopped in."""

    next_node: int = 0
    node_outputs: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    cost_usd: str = "0"
    event_seq: int = 0
    materials_staged: bool = False
    node_state: NodeState | None = None

    @classmethod
    def from_json(cls, data: dict | None) -> "Checkpoint":
        """Read a stored checkpoint, of this version or the previous (unversioned) one."""
        data = data or {}
        version = data.get("version", 1)
        if version > CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint version {version} is newer than this code's {CHECKPOINT_VERSION}")
        state = data.get("node_state")
        return cls(
            next_node=data.get("next_node", 0),
            node_outputs=data.get("node_outputs", {}),
            usage=data.get("usage", {}),
            cost_usd=data.get("cost_usd", "0"),
            event_seq=data.get("event_seq", 0),
            materials_staged=data.get("materials_staged", False),
            node_state=node_state_from_json(state) if state else None,
        )

    def to_json(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "next_node": self.next_node,
            "node_outputs": self.node_outputs,
            "usage": self.usage,
            "cost_usd": self.cost_usd,
            "event_seq": self.event_seq,
            "materials_staged": self.materials_staged,
            "node_state": self.node_state.to_json() if self.node_state is not None else None,
        }

    def with_node_state(self, state: NodeState | None) -> "Checkpoint":
        return replace(self, node_state=state)

    # --- what a suspended execution waits for (the readers in executions/) -----------------------

    def pending_tool_call_ids(self) -> list[str]:
        return self.node_state.pending_tool_call_ids() if self.node_state is not None else []

    def expected_event(self) -> str | None:
        return self.node_state.expected_event() if self.node_state is not None else None

    def input_on_timeout(self) -> dict | None:
        return self.node_state.input_on_timeout() if self.node_state is not None else None

    def waits_for_sub_execution(self, child_id: str) -> bool:
        return self.node_state is not None and self.node_state.waits_for_sub_execution(child_id)

    def media_request_id(self) -> str | None:
        return self.node_state.media_request_id() if self.node_state is not None else None
