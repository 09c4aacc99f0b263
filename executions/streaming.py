"""The SSE relay: an execution's event log, replayed from the database, then followed live.

Why not django-eventstream's own view (DESIGN.md, "Known pitfalls"): it starts at the *current*
event instead of the first, ids events as `channel:id`, adds `event:` lines where the agents spec
wants bare `data: <json>` frames, never ends a stream, fans every event of the process through one
global pub/sub channel, skips a lost pub/sub message without noticing the gap, and holds a thread
and a database connection per stream. We keep its channel-manager interface for authorization
(configured in settings, since by default it lets anyone read any channel) and relay ourselves:

- one coroutine per stream, no thread: the log is read through a small async psycopg pool and the
  live events arrive on the execution's own Redis pub/sub channel;
- subscribe first, then read the log, so nothing published in between is missed;
- every frame is `id: <seq>` + `data: <json>`; a pub/sub message whose seq is not the next one
  (lost, reordered, or the reader overflowed) makes the relay read the log again from its last seq,
  so a client never misses an event and never sees one twice;
- a heartbeat comment every SSE_HEARTBEAT_SECONDS keeps proxies from closing an idle stream, and
  the log is re-read at each heartbeat as a second safety net;
- the stream ends after the `final` or `error` event, and at a suspension (`suspended`).
"""

import asyncio
import json
import re
import uuid

import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection as django_connection
from django_eventstream.channelmanager import ChannelManagerBase
from psycopg_pool import AsyncConnectionPool

from executions.events import END_OF_STREAM_TYPES, PAUSE_TYPE, channel_name


READ_BATCH = 500
_pools: dict = {}
_redis_clients: dict = {}


# --- authorization (django-eventstream channel manager) -----------------------------------------

CHANNEL_PATTERN = re.compile(r"^execution-(?P<id>[0-9a-f-]{36})$")


class ExecutionChannelManager(ChannelManagerBase):
    """Channel `execution-<uuid>` is readable by the callers that may read that execution."""

    def get_channels_for_request(self, request, view_kwargs):
        return {f"execution-{view_kwargs['execution_id']}"} if "execution_id" in view_kwargs else set()

    def can_read_channel(self, user, channel):
        from executions.selectors import readable_executions

        match = CHANNEL_PATTERN.match(channel)
        if user is None or not match:
            return False
        return readable_executions(user).filter(id=match["id"]).exists()

    def is_channel_reliable(self, channel):
        return True


# --- async access to the log and to pub/sub -------------------------------------------------------


def _conninfo() -> str:
    params = django_connection.get_connection_params()
    keys = {"host": "host", "port": "port", "dbname": "dbname", "user": "user", "password": "password"}
    parts = [f"{key}='{params[name]}'" for name, key in keys.items() if params.get(name)]
    return " ".join(parts)


async def _pool() -> AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = AsyncConnectionPool(_conninfo(), min_size=1, max_size=settings.SSE_DB_POOL_SIZE, open=False)
        _pools[loop] = pool
        await pool.open()
    return pool


def _redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _redis_clients.get(loop)
    if client is None:
        client = _redis_clients[loop] = aioredis.Redis.from_url(settings.REDIS_URL)
    return client


async def read_log(execution_id: uuid.UUID, after_seq: int) -> list[tuple[int, str]]:
    pool = await _pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT seq, data::text FROM executions_executionevent"
            " WHERE execution_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (execution_id, after_seq, READ_BATCH),
        )
        return await cursor.fetchall()


async def log_has_ended(execution_id: uuid.UUID, up_to_seq: int) -> bool:
    pool = await _pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM executions_executionevent"
            " WHERE execution_id = %s AND seq <= %s AND type = ANY(%s))",
            (execution_id, up_to_seq, list(END_OF_STREAM_TYPES)),
        )
        return (await cursor.fetchone())[0]


def _ends_stream(data_text: str, is_latest: bool = True) -> bool:
    type_ = json.loads(data_text).get("type")
    return type_ in END_OF_STREAM_TYPES or (type_ == PAUSE_TYPE and is_latest)


async def follow_events(execution_id: uuid.UUID, after_seq: int = 0, heartbeat: float | None = None):
    """Yield (seq, event JSON text) after `after_seq` in order, live, to the end of the stream;
    yield None whenever `heartbeat` seconds pass without an event."""
    heartbeat = heartbeat or settings.SSE_HEARTBEAT_SECONDS
    pubsub = _redis().pubsub()
    await pubsub.subscribe(channel_name(execution_id))
    last = after_seq
    loop = asyncio.get_running_loop()
    next_heartbeat = loop.time() + heartbeat
    try:
        need_log_read = True
        while True:
            if need_log_read:
                rows = await read_log(execution_id, last)
                for index, (seq, data_text) in enumerate(rows):
                    yield seq, data_text
                    last = seq
                    if _ends_stream(data_text, is_latest=index == len(rows) - 1):
                        return
                if len(rows) == READ_BATCH:
                    continue
                if not rows and await log_has_ended(execution_id, last):
                    return  # resumed after the end: nothing more will come
                need_log_read = False
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=heartbeat)
            if message is None:
                if loop.time() >= next_heartbeat:  # not just a subscribe confirmation
                    yield None
                    next_heartbeat = loop.time() + heartbeat
                    need_log_read = True
                continue
            next_heartbeat = loop.time() + heartbeat
            data_text = message["data"].decode()
            seq = json.loads(data_text)["seq"]
            if seq <= last:
                continue  # already sent from the log
            if seq != last + 1:
                need_log_read = True  # a gap: fill it from the log
                continue
            yield seq, data_text
            last = seq
            if _ends_stream(data_text):
                return
    finally:
        await pubsub.aclose()  # also when the client went away: returns the connection to the pool


async def relay_events(execution_id: uuid.UUID, after_seq: int = 0):
    """The SSE body: one `id:`/`data:` frame per event, a comment line as heartbeat."""
    async for item in follow_events(execution_id, after_seq):
        if item is None:
            yield ": heartbeat\n\n"
        else:
            seq, data_text = item
            yield f"id: {seq}\ndata: {data_text}\n\n"


async def close_loop_resources() -> None:
    """Close the current event loop's pool and Redis client (for short-lived loops, e.g. tests)."""
    loop = asyncio.get_running_loop()
    pool, client = _pools.pop(loop, None), _redis_clients.pop(loop, None)
    if pool is not None:
        await pool.close()
    if client is not None:
        await client.aclose()
