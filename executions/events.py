"""The durable, ordered event log of an execution, published live on Redis pub/sub.

Appending is one SQL statement: it bumps the execution's `last_event_seq` and inserts the event
with that number, so sequence numbers are gap-free and unique even with concurrent writers.
A writer that holds a lease passes its attempt number: if the lease was lost meanwhile, nothing is
written and the writer learns it must stop. The same statement reports `cancel_requested`, so a
worker streaming text learns of a cancel without an extra query.
"""

import json
import logging
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.db import connection, transaction

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
            {"execution_id": execution.id, "type": type_, "payload": json.dumps(body), "attempt": attempt},
        )
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(str(execution.id))
    _seq, data_text, cancel_requested = row
    transaction.on_commit(lambda: publish(execution.id, data_text))
    return AppendResult(event=json.loads(data_text), cancel_requested=bool(cancel_requested))


def publish(execution_id, data_text: str) -> None:
    """Best effort: a subscriber that misses this message fills the gap from the log by seq."""
    try:
        _redis_client().publish(channel_name(execution_id), data_text)
    except redis.RedisError as exc:
        logger.warning("could not publish an event of %s: %s", execution_id, exc)
