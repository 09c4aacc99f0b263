"""An execution's event log as a timeline an operator reads (issue 13, item 2).

Raw events become entries: the text and reasoning chunks of one model turn merged into one block,
each tool call paired with its result, suspensions and resumes, media and artifacts inline,
consecutive heartbeats collapsed; each with its offset from the execution's start in
milliseconds. The log is shown in pages of TIMELINE_PAGE_EVENTS events, cut by seq (gap-free,
so a page is one range scan of the (execution, seq) index, whatever the log's length).

Entries that start a node or a model turn (after the node's first) carry `fork_seq`: the point a
fork may start from (the fork action takes the checkpoint at or before that seq).
"""

import json
from dataclasses import dataclass, field

from django.urls import reverse

from executions.models import Artifact, ExecutionEvent
from files.models import StoredFile

TIMELINE_PAGE_EVENTS = 500
JSON_PREVIEW_CHARS = 4000
HIDDEN_KEYS = ("type", "execution_id", "seq", "node_id")
TURN_TYPES = ("text", "reasoning", "tool_call", "tool_call_awaiting_client")


@dataclass
class Entry:
    kind: str  # turn, tool, client_tool, node, node_end, suspend, resume, media, artifact, sub, heartbeat, final, error, event
    seq: int
    offset_ms: int
    type: str
    node_id: str = ""
    data: dict = field(default_factory=dict)
    last_seq: int = 0
    text: str = ""
    reasoning: str = ""
    chunks: int = 0
    result: dict | None = None
    result_seq: int | None = None
    result_offset_ms: int | None = None
    count: int = 1
    fork_seq: int | None = None
    image_url: str = ""
    download_url: str = ""
    link_id: str = ""

    @property
    def details(self) -> str:
        """The event's own fields as indented JSON (the envelope keys left out)."""
        return pretty_json({k: v for k, v in self.data.items() if k not in HIDDEN_KEYS})

    @property
    def arguments(self) -> str:
        return pretty_json(self.data.get("arguments"))

    @property
    def result_json(self) -> str:
        return pretty_json((self.result or {}).get("result"))

    @property
    def outcome(self) -> str:
        return (self.result or {}).get("outcome", "")

    @property
    def result_after_ms(self) -> int | None:
        return None if self.result_offset_ms is None else self.result_offset_ms - self.offset_ms


def pretty_json(value) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return text if len(text) <= JSON_PREVIEW_CHARS else text[:JSON_PREVIEW_CHARS] + "\n… (truncated)"


def offset_ms(moment, start) -> int:
    """Never negative: an event's time is its transaction's start (PostgreSQL's now()), which may
    precede the row's `created_at` taken in Python within the same transaction."""
    return max(0, int((moment - start).total_seconds() * 1000))


def build_timeline(events, start) -> list[Entry]:
    """Entries from events in seq order (ExecutionEvent rows); `start` is the execution's start."""
    entries: list[Entry] = []
    calls: dict[str, Entry] = {}
    turn: Entry | None = None  # the text block being merged
    in_turn: dict[str, bool] = {}  # per node: a model turn's events are being seen
    turns: dict[str, int] = {}
    for event in events:
        data, type_, seq = event.data, event.type, event.seq
        node = data.get("node_id", "") or ""
        at = offset_ms(event.created_at, start)
        new_turn_seq = None
        if type_ in TURN_TYPES and not in_turn.get(node):
            in_turn[node] = True
            turns[node] = turns.get(node, 0) + 1
            new_turn_seq = seq if turns[node] > 1 else None
        if type_ in ("text", "reasoning"):
            if turn is None or turn.node_id != node or new_turn_seq is not None:
                turn = Entry("turn", seq, at, type_, node_id=node, fork_seq=new_turn_seq)
                entries.append(turn)
            if data.get("reset"):  # a retried attempt restreamed it: the text so far is replaced
                setattr(turn, type_, data.get("text", ""))
            else:
                setattr(turn, type_, getattr(turn, type_) + data.get("text", ""))
            turn.last_seq, turn.chunks = seq, turn.chunks + 1
            continue
        turn = None
        if type_ in ("tool_result", "resumed", "node_start", "node_complete"):
            in_turn[node] = False
        if type_ in ("tool_call", "tool_call_awaiting_client"):
            entry = Entry("tool" if type_ == "tool_call" else "client_tool", seq, at, type_, node, data)
            entry.fork_seq = new_turn_seq
            calls[data.get("tool_call_id", "")] = entry
            entries.append(entry)
        elif type_ == "tool_result":
            call = calls.pop(data.get("tool_call_id", ""), None)
            if call is None:  # its call is on an earlier page
                call = Entry("tool", seq, at, type_, node, {"name": data.get("name"), "arguments": None})
                entries.append(call)
            call.result, call.result_seq, call.result_offset_ms = data, seq, at
        elif type_ == "heartbeat" and entries and entries[-1].kind == "heartbeat":
            entries[-1].count += 1
            entries[-1].last_seq = seq
        else:
            entries.append(_entry(type_, seq, at, node, data))
    return entries


KINDS = {
    "node_start": "node",
    "node_complete": "node_end",
    "suspended": "suspend",
    "resumed": "resume",
    "media_gen_complete": "media",
    "artifact": "artifact",
    "sub_execution_started": "sub",
    "heartbeat": "heartbeat",
    "final": "final",
    "error": "error",
}


def _entry(type_: str, seq: int, at: int, node: str, data: dict) -> Entry:
    entry = Entry(KINDS.get(type_, "event"), seq, at, type_, node, data, last_seq=seq)
    if type_ == "node_start":
        entry.fork_seq = seq
    elif type_ == "sub_execution_started":
        entry.link_id = str(data.get("sub_execution_id", "")).removeprefix("execution:")
    return entry


def attach_files(entries: list[Entry]) -> None:
    """Admin URLs for media and artifacts (one query each, for the whole page): images are shown."""
    media = [entry for entry in entries if entry.kind == "media"]
    artifacts = [entry for entry in entries if entry.kind == "artifact"]
    if media:
        keys = [entry.data.get("storage_key") for entry in media]
        stored = dict(StoredFile.objects.filter(storage_key__in=keys).values_list("storage_key", "id"))
        for entry in media:
            file_id = stored.get(entry.data.get("storage_key"))
            if file_id is not None:
                entry.download_url = reverse("admin:files_storedfile_download", args=[file_id])
                if str(entry.data.get("content_type", "")).startswith("image/"):
                    entry.image_url = entry.download_url
    if artifacts:
        ids = [entry.data.get("artifact_id") for entry in artifacts]
        known = set(str(i) for i in Artifact.objects.filter(id__in=ids).values_list("id", flat=True))
        for entry in artifacts:
            if entry.data.get("artifact_id") in known:
                entry.download_url = reverse("admin:executions_artifact_download", args=[entry.data["artifact_id"]])
                if str(entry.data.get("document_type", "")).startswith("image/"):
                    entry.image_url = entry.download_url


@dataclass
class TimelinePage:
    entries: list[Entry]
    number: int
    pages: int
    first_seq: int
    last_seq: int  # the last seq shown (where a live tail goes on)

    @property
    def is_last(self) -> bool:
        return self.number >= self.pages

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return None if self.is_last else self.number + 1


def timeline_page(execution, number: int) -> TimelinePage:
    """Page `number` (1-based, clamped) of the execution's timeline: one query for its events."""
    pages = max(1, -(-execution.last_event_seq // TIMELINE_PAGE_EVENTS))
    number = min(max(1, number), pages)
    low, high = (number - 1) * TIMELINE_PAGE_EVENTS, number * TIMELINE_PAGE_EVENTS
    events = list(ExecutionEvent.objects.filter(execution=execution, seq__gt=low, seq__lte=high).order_by("seq"))
    entries = build_timeline(events, execution.created_at)
    attach_files(entries)
    last_seq = events[-1].seq if events else low
    return TimelinePage(entries, number, pages, low + 1, last_seq)
