"""The durable, ordered event log of an execution, published live on Redis pub/sub.

Appending is one SQL statement: it bumps the execution's `last_event_seq` and inserts the event
with that number, so sequence numbers are gap-free and unique even with concurrent writers.
A writer that holds a lease passes its attempt number: if the lease was lost meanwhile, nothing is
written and the writer learns it must stop. The same statement reports `cancel_requested`, so a
worker streaming text learns of a cancel without an extra query.

`append_event` writes one event inside the caller's transaction (the API, state transitions);
`append_events` writes the events of many running executions at once, in one statement and one
commit, for the worker's event writer (workers/event_writer.py).
"""

import json
import logging
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.db import connection, transaction

from core import json as finite_json
from core.metrics import EVENTS_WRITTEN

logger = logging.getLogger(__name__)

# `final`, `error` and `batch_completed` end every stream; `suspended` ends a stream unless more events follow it
# (the execution was resumed since).
END_OF_STREAM_TYPES = frozenset({"final", "error", "batch_completed"})
PAUSE_TYPE = "suspended"


def channel_name(execution_id) -> str:
    return f"execution-events:{execution_id}"


@lru_cache(maxsize=1)
def _redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


class LeaseLost(Exception):
    """The writer's attempt is no longer the execution's current one: it must stop at once."""


@dataclass
class AppendResult:
    event: dict
    cancel_requested: bool


_APPEND_SQL = """
WITH bumped AS (
    UPDATE executions_execution
       SET last_event_seq = last_event_seq + 1
     WHERE id = %(execution_id)s {fence}
 RETURNING last_event_seq, cancel_requested
)
INSERT INTO executions_executionevent (execution_id, seq, type, data, created_at)
SELECT %(execution_id)s, bumped.last_event_seq, %(type)s,
       %(payload)s::jsonb || jsonb_build_object('seq', bumped.last_event_seq), now()
  FROM bumped
RETURNING seq, data::text, (SELECT cancel_requested FROM bumped)
"""


def append_event(execution, type_: str, payload: dict | None = None, attempt: int | None = None) -> AppendResult:
    """Persist one event and publish it once the surrounding transaction (if any) commits."""
    body = {**(payload or {}), "type": type_, "execution_id": execution.public_id}
    fence = "AND attempt = %(attempt)s AND state = 'running'" if attempt is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            _APPEND_SQL.format(fence=fence),
            {"execution_id": execution.id, "type": type_, "payload": finite_json.dumps(body), "attempt": attempt},
        )
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(str(execution.id))
    EVENTS_WRITTEN.inc()
    _seq, data_text, cancel_requested = row
    transaction.on_commit(lambda: publish(execution.id, data_text))
    return AppendResult(event=json.loads(data_text), cancel_requested=bool(cancel_requested))


def publish(execution_id, data_text: str) -> None:
    """Best effort: a subscriber that misses this message fills the gap from the log by seq."""
    publish_many([(execution_id, data_text)])


def publish_many(events: list[tuple]) -> None:
    """(execution_id, event JSON) pairs, in one round trip, in order."""
    try:
        pipeline = _redis_client().pipeline(transaction=False)
        for execution_id, data_text in events:
            pipeline.publish(channel_name(execution_id), data_text)
        pipeline.execute()
    except redis.RedisError as exc:
        logger.warning("could not publish %s events: %s", len(events), exc)


@dataclass
class PendingEvent:
    """An event a running attempt hands to `append_events`."""

    execution_id: object
    attempt: int
    type: str
    body: str  # the event JSON without its seq


@dataclass
class WrittenEvents:
    """What `append_events` wrote for one execution."""

    last_seq: int
    cancel_requested: bool
    data: list  # the events' JSON, in seq order


# Each execution's events get consecutive seqs in their input order (`ord`). Only executions still
# running under the writer's attempt are bumped (the fence), and only their events are inserted.
_APPEND_MANY_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(types)s::text[], %(bodies)s::jsonb[])
           WITH ORDINALITY AS t(execution_id, attempt, type, body, ord)
), counts AS (
    SELECT execution_id, min(attempt) AS attempt, count(*) AS n FROM input GROUP BY execution_id
), bumped AS (
    UPDATE executions_execution e
       SET last_event_seq = e.last_event_seq + c.n
      FROM counts c
     WHERE e.id = c.execution_id AND e.attempt = c.attempt AND e.state = 'running'
 RETURNING e.id, e.last_event_seq - c.n AS base, e.cancel_requested
), numbered AS (
    SELECT i.execution_id, i.type, i.body,
           (b.base + row_number() OVER (PARTITION BY i.execution_id ORDER BY i.ord))::int AS seq
      FROM input i JOIN bumped b ON b.id = i.execution_id
), inserted AS (
    INSERT INTO executions_executionevent (execution_id, seq, type, data, created_at)
    SELECT execution_id, seq, type, body || jsonb_build_object('seq', seq), now() FROM numbered
    RETURNING execution_id, seq, data::text AS data
)
SELECT i.execution_id, i.seq, i.data, b.cancel_requested
  FROM inserted i JOIN bumped b ON b.id = i.execution_id
 ORDER BY i.execution_id, i.seq
"""


def append_events(events: list[PendingEvent]) -> dict:
    """Persist the events of running attempts in one statement (autocommit: its own transaction).

    Returns {execution_id: WrittenEvents} for the executions whose attempt still holds the lease;
    an execution missing from it lost its lease and nothing of it was written. Publish afterwards."""
    params = {
        "ids": [e.execution_id for e in events],
        "attempts": [e.attempt for e in events],
        "types": [e.type for e in events],
        "bodies": [e.body for e in events],
    }
    written: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_MANY_SQL, params)
        for execution_id, seq, data_text, cancel_requested in cursor.fetchall():
            entry = written.setdefault(execution_id, WrittenEvents(0, bool(cancel_requested), []))
            entry.last_seq = seq
            entry.data.append(data_text)
    EVENTS_WRITTEN.inc(sum(len(entry.data) for entry in written.values()))
    return written
