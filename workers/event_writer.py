"""The events of every run in flight in a worker process, written by one thread in batches.

Why: a worker process holds hundreds of runs at once, and one INSERT, one commit and one PUBLISH
per event (each run writing its own) is most of the CPU of the worker and of PostgreSQL. Here a run
hands its events over and goes on streaming; the writer thread takes whatever is waiting, writes it
in one statement and one commit (`executions.events.append_events`: fenced per attempt, seqs
assigned by the database), publishes it in one Redis pipeline, then tells each run its last seq,
whether a cancel was requested, or that its lease was lost. A run waits for its events
(`RunEvents.flush`) only where it needs their seq: before a checkpoint, a suspension or its end.
Celery and Django have nothing like this group commit across threads, hence this small module.
One run's bad data must not fail the others: events are encoded by core/json.py in the run's own
thread (NaN and infinities refused there), and a batch the database refuses is written again run
by run (`write_batch`).

The writer thread is started in worker processes (workers/tasks.py, on `worker_init`); anywhere
else (a run in a test process, a shell) each run writes its events itself, on its own thread,
through the same statement.
"""

import logging
import queue
import threading
import time
from collections import Counter

from django.db import InterfaceError, OperationalError, connection

from core import json as finite_json
from executions.events import LeaseLost, PendingEvent, append_events, publish_many

logger = logging.getLogger(__name__)

MAX_BATCH = 1000  # events per statement


class RunEvents:
    """The events one attempt of one execution has handed over, and what came back."""

    def __init__(self, execution, attempt: int):
        self.execution_id, self.public_id, self.attempt = execution.id, execution.public_id, attempt
        self.last_seq = execution.last_event_seq  # of the events written so far
        self.cancel_requested = execution.cancel_requested
        self.lease_lost = False
        self.error: BaseException | None = None
        self._pending = 0
        self._settled = threading.Condition()

    def append(self, type_: str, payload: dict) -> None:
        """NonFiniteNumber (raised here, in the run's thread) for an event jsonb would refuse."""
        body = finite_json.dumps({**payload, "type": type_, "execution_id": self.public_id})
        event = PendingEvent(self.execution_id, self.attempt, type_, body)
        with self._settled:
            self._pending += 1
        writer = _writer
        if writer is None:
            write_batch([(self, event)])
        else:
            writer.submit(self, event)

    def flush(self) -> None:
        """Wait until every event handed over is written; LeaseLost if the attempt lost its lease."""
        with self._settled:
            self._settled.wait_for(lambda: self._pending == 0)
        if self.error is not None:
            raise self.error
        if self.lease_lost:
            raise LeaseLost(str(self.execution_id))

    def _settle(self, count: int, written, error: BaseException | None) -> None:
        with self._settled:
            if error is not None:
                self.error = error
            elif written is None:
                self.lease_lost = True
            else:
                self.last_seq = written.last_seq
                self.cancel_requested = self.cancel_requested or written.cancel_requested
            self._pending -= count
            self._settled.notify_all()


def write_batch(batch: list[tuple[RunEvents, PendingEvent]]) -> None:
    """One statement for the batch (retried once after a lost connection), then one pipeline.

    A statement the database refuses for its data (a string jsonb cannot hold, say) is written
    again run by run, so that only the run whose events were refused fails: each run's flush then
    raises its own error, and the runtime fails that run alone with an error event."""
    events = [event for _, event in batch]
    written, error = _append(events)
    errors: dict = {}
    if error is not None and not _is_connection_error(error) and len({id(r) for r, _ in batch}) > 1:
        written, error = {}, None
        for run_events, run_batch in _by_run(batch).items():
            run_written, run_error = _append([event for _, event in run_batch])
            written.update(run_written)
            if run_error is not None:
                errors[run_events] = run_error
    publish_many([(execution_id, data) for execution_id, entry in written.items() for data in entry.data])
    for run_events, count in Counter(run_events for run_events, _ in batch).items():
        run_events._settle(count, written.get(run_events.execution_id), errors.get(run_events, error))


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError))


def _by_run(batch: list[tuple[RunEvents, PendingEvent]]) -> dict:
    runs: dict = {}
    for run_events, event in batch:
        runs.setdefault(run_events, []).append((run_events, event))
    return runs


def _append(events: list[PendingEvent]) -> tuple[dict, BaseException | None]:
    """append_events, retried once on a new connection after a lost one; (written, error)."""
    for first_try in (True, False):
        try:
            return append_events(events), None
        except Exception as exc:
            connection.close()
            if first_try and _is_connection_error(exc):  # e.g. PostgreSQL restarted
                time.sleep(0.2)  # then once more, on a new connection
                continue
            logger.exception("could not write %s events", len(events))
            return {}, exc
    raise AssertionError("unreachable")


class EventWriter(threading.Thread):
    """The worker process's writer thread: batches grow by themselves while a statement runs."""

    def __init__(self):
        super().__init__(daemon=True, name="event-writer")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, run_events: RunEvents, event: PendingEvent) -> None:
        self._queue.put((run_events, event))

    def run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            write_batch(batch)  # the thread keeps its one connection


_writer: EventWriter | None = None


def start_writer() -> None:
    """Start the process's writer thread (once)."""
    global _writer
    if _writer is None:
        _writer = EventWriter()
        _writer.start()
