"""The SSE relay: an execution's event log, replayed from the database, then followed live.

Why not django-eventstream's own view (DESIGN.md, "Known pitfalls"): it starts at the *current*
event instead of the first, ids events as `channel:id`, adds `event:` lines where the agents spec
wants bare `data: <json>` frames, never ends a stream, fans every event of the process through one
global pub/sub channel, skips a lost pub/sub message without noticing the gap, does not restart its
listener when it dies, and holds a thread and a database connection per stream. We keep its
channel-manager interface for authorization (configured in settings, since by default it lets
anyone read any channel) and relay ourselves:

- one coroutine per stream, no thread: the log is read through a small async psycopg pool (a read
  that meets a broken connection makes the pool check all of them and is retried, so a stream
  survives a PostgreSQL restart) and live events arrive through the process's one shared pub/sub listener (`_Listener`):
  one Redis connection per event loop, subscribed to the channels of the executions that are being
  followed (refcounted: the first stream of a channel subscribes, the last one unsubscribes), which
  hands each message to the inbox of every stream of that channel;
- subscribe first (wait for Redis to confirm the subscription), then read the log, so nothing
  published in between is missed;
- every frame is `id: <seq>` + `data: <json>`; a pub/sub message whose seq is not the next one
  (lost, reordered, or the stream's inbox overflowed) makes the relay read the log again from its
  last seq, so a client never misses an event and never sees one twice;
- a listener whose connection dies is restarted with backoff; once a channel is subscribed again,
  its streams re-read the log, which holds whatever was published while the listener was away;
- a heartbeat comment every SSE_HEARTBEAT_SECONDS keeps proxies from closing an idle stream, and
  the log is re-read at each heartbeat as a second safety net;
- the stream ends after the `final`, `error` or `batch_completed` event, and at a suspension
  (`suspended`) that is the latest event; a request resumed at or past the end of an ended
  execution is answered 204 instead of an empty stream (`stream_is_over`), since a browser's
  EventSource reconnects after every stream that ends and stops only on a 204; so is any request
  for a purged execution (its log is erased), and a stream open when its execution is purged ends
  at its next heartbeat.
"""

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import uuid

import psycopg
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection as django_connection
from django_eventstream.channelmanager import ChannelManagerBase
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from core.metrics import SSE_LOG_REREADS, SSE_STREAMS_OPEN
from executions.events import END_OF_STREAM_TYPES, PAUSE_TYPE, channel_name
from executions.models import TERMINAL_STATES, Execution
from executions.selectors import readable_executions

logger = logging.getLogger(__name__)

READ_BATCH = 500
# A log read that fails on a broken connection is tried again this often, after these pauses.
LOG_READ_RETRY_DELAYS = (0.2, 1.0, 3.0)
# What operators see in pg_stat_activity for the relay's connections.
LOG_READER_APPLICATION_NAME = "sse-log-reader"
# A stream waits this long for Redis to confirm its channel's subscription before its first log
# read; without the confirmation it relies on the log re-reads at its heartbeats.
SUBSCRIBE_TIMEOUT_SECONDS = 3.0
# Messages a stream's inbox holds for a slow consumer; beyond that they are dropped and the stream
# re-reads the log instead (memory stays bounded).
INBOX_LIMIT = 100
# Restarts of a dead listener wait 0.1 s, then twice as long each time, up to this.
LISTENER_MAX_BACKOFF_SECONDS = 5.0

_pools: dict = {}
_listeners: dict = {}


# --- authorization (django-eventstream channel manager) -----------------------------------------

CHANNEL_PATTERN = re.compile(r"^execution-(?P<id>[0-9a-f-]{36})$")


class ExecutionChannelManager(ChannelManagerBase):
    """Channel `execution-<uuid>` is readable by the callers that may read that execution."""

    def get_channels_for_request(self, request, view_kwargs):
        return {f"execution-{view_kwargs['execution_id']}"} if "execution_id" in view_kwargs else set()

    def can_read_channel(self, user, channel):
        match = CHANNEL_PATTERN.match(channel)
        if user is None or not match:
            return False
        return readable_executions(user).filter(id=match["id"]).exists()

    def is_channel_reliable(self, channel):
        return True


# --- the event log in PostgreSQL -----------------------------------------------------------------


def _conninfo() -> str:
    params = django_connection.get_connection_params()
    keys = ("host", "port", "dbname", "user", "password")
    values = {key: params[key] for key in keys if params.get(key)}
    return make_conninfo(**values, application_name=LOG_READER_APPLICATION_NAME)


async def _pool() -> AsyncConnectionPool:
    """The event loop's pool of log readers (`_query` replaces the connections a restart broke)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = AsyncConnectionPool(
            _conninfo(),
            min_size=1,
            max_size=settings.SSE_DB_POOL_SIZE,
            open=False,
            # reads only: no BEGIN and COMMIT around each; no prepared statements behind a transaction
            # pooler (settings.DB_TRANSACTION_POOLING), like Django's own connections
            kwargs={
                "autocommit": True,
                "prepare_threshold": django_connection.settings_dict["OPTIONS"].get("prepare_threshold", 5),
            },
        )
        _pools[loop] = pool
        await pool.open()
    return pool


async def _query(sql: str, params: tuple) -> list[tuple]:
    """Run one read; when the connection broke under it (a PostgreSQL restart, pg_terminate_backend),
    have the pool check all its idle connections at once, then read again after a short pause; the
    last failure is raised.

    No check before every read (the pool's `check=`): it costs a round trip per read, and a broken
    connection is found by the read itself. Checking the whole pool at the first broken one matters:
    after a restart they are all broken, and psycopg_pool would otherwise find them one by one with
    a growing pause in between (1 s, 2 s, 4 s, ...: about 30 s for a full pool, psycopg/psycopg#711)."""
    for delay in (*LOG_READ_RETRY_DELAYS, None):
        pool = await _pool()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except psycopg.OperationalError:
            if delay is None:
                raise
            logger.warning("event log read failed; retrying in %s s", delay, exc_info=True)
            await pool.check()
            await asyncio.sleep(delay)


async def read_log(execution_id: uuid.UUID, after_seq: int) -> list[tuple[int, str]]:
    return await _query(
        "SELECT seq, data::text FROM executions_executionevent"
        " WHERE execution_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (execution_id, after_seq, READ_BATCH),
    )


async def log_has_ended(execution_id: uuid.UUID, up_to_seq: int) -> bool:
    """An end-of-stream event at or before `up_to_seq`, or a purged execution: its log was erased,
    so the event a stream would wait for will never come."""
    rows = await _query(
        "SELECT EXISTS (SELECT 1 FROM executions_executionevent"
        " WHERE execution_id = %s AND seq <= %s AND type = ANY(%s))"
        " OR EXISTS (SELECT 1 FROM executions_execution WHERE id = %s AND is_purged)",
        (execution_id, up_to_seq, list(END_OF_STREAM_TYPES), execution_id),
    )
    return rows[0][0]


# --- the shared pub/sub listener ------------------------------------------------------------------
#
# Hand-written because redis-py has no fan-out for many consumers of one pub/sub connection: its
# PubSub keeps one handler per channel (subscribing a channel again replaces it, and one consumer's
# unsubscribe ends the channel for all), has no per-consumer buffer, and reconnects on its own
# without telling anyone that messages were lost meanwhile. So the listener owns a plain
# connection, counts the streams of each channel, and restarts itself when the connection dies.


class _Inbox:
    """What the listener hands one stream: the messages it has not taken yet, or a request to
    re-read the log (after an overflow or a reconnect), and an event that wakes it up."""

    def __init__(self, channel: "_Channel"):
        self.channel = channel
        self.messages: collections.deque = collections.deque()
        self.must_reread = False
        self.ready = asyncio.Event()

    def put(self, message: tuple[int, str, bool]) -> None:
        if len(self.messages) >= INBOX_LIMIT:
            self.messages.clear()  # the log has them: a slow stream costs a re-read, not memory
            self.must_reread = True
        else:
            self.messages.append(message)
        self.ready.set()

    def ask_reread(self) -> None:
        self.must_reread = True
        self.ready.set()

    async def take(self, timeout: float) -> tuple[list[tuple[int, str, bool]], bool]:
        """The pending (seq, event JSON, ends the stream) messages and whether to re-read the log;
        both empty after `timeout` idle."""
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return [], False
        messages, reread = list(self.messages), self.must_reread
        self.messages.clear()
        self.must_reread = False
        self.ready.clear()
        return messages, reread


class _Channel:
    """The streams of one execution in this process, and whether Redis confirmed the subscription
    on the current connection."""

    def __init__(self, name: str):
        self.name = name
        self.inboxes: set[_Inbox] = set()
        self.confirmed = asyncio.Event()
        self.resubscribing = False  # its streams re-read the log once the new subscription is confirmed


class _Listener:
    """One Redis pub/sub connection for every stream of an event loop.

    `join`/`leave` only change `channels`; a writer task turns the difference with what the
    connection is subscribed to into SUBSCRIBE/UNSUBSCRIBE (and PINGs an idle connection), a reader
    task fans messages out to the inboxes. When either fails, the connection is dropped and a new
    one is opened with backoff and subscribed to every channel still wanted.
    """

    def __init__(self):
        self.channels: dict[str, _Channel] = {}
        self.changed = asyncio.Event()
        self.closing = False
        self.subscribed: set[str] = set()  # SUBSCRIBE sent on the current connection
        self.unconfirmed: collections.Counter = collections.Counter()  # SUBSCRIBE sent, reply not read yet
        # RESP2: pub/sub replies are plain arrays (RESP3, redis-py's default, sends them as push
        # frames). No socket_timeout: with one, redis-py sends through asyncio.wait_for, which on
        # Python 3.11 can swallow a cancellation and leave the writer running; reads pass their own
        # timeout. The name tells operators which process a connection is (CLIENT LIST).
        self.redis_pool = aioredis.ConnectionPool.from_url(
            settings.REDIS_URL,
            protocol=2,
            socket_timeout=None,
            socket_connect_timeout=5,
            client_name=f"sse-listener:{os.getpid()}",
        )
        self.task = asyncio.get_running_loop().create_task(self._run(), name="sse-listener")

    async def join(self, name: str) -> _Inbox:
        """A new stream's inbox on channel `name`, once Redis confirmed the subscription (or after
        SUBSCRIBE_TIMEOUT_SECONDS: the stream's log re-reads cover the rest)."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = _Channel(name)
            self.changed.set()
        inbox = _Inbox(channel)
        channel.inboxes.add(inbox)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                await channel.confirmed.wait()
        except TimeoutError:
            logger.warning("no subscription confirmation for %s; following the log only", name)
            channel.resubscribing = True  # re-read the log once the subscription is there
        except BaseException:
            self.leave(inbox)
            raise
        return inbox

    def leave(self, inbox: _Inbox) -> None:
        """Synchronous, so that it also runs in a generator closed by a cancellation."""
        inbox.channel.inboxes.discard(inbox)
        if not inbox.channel.inboxes:
            self.changed.set()  # the writer unsubscribes and forgets the channel

    async def aclose(self) -> None:
        self.closing = True  # also ends the loop if a cancellation got swallowed on the way
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self.redis_pool.disconnect()

    async def _run(self) -> None:
        """Serve connections forever; a failed one is replaced after a growing pause."""
        backoff = 0.1
        while not self.closing:
            connection = self.redis_pool.make_connection()
            try:
                await connection.connect()
                backoff = 0.1
                await self._serve(connection)
            except Exception:
                logger.warning("SSE pub/sub listener lost its connection; restarting in %s s", backoff, exc_info=True)
            finally:
                await connection.disconnect(nowait=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LISTENER_MAX_BACKOFF_SECONDS)

    async def _serve(self, connection) -> None:
        self.subscribed, self.unconfirmed = set(), collections.Counter()
        for channel in self.channels.values():
            if channel.confirmed.is_set():  # its streams may have missed messages meanwhile
                channel.confirmed.clear()
                channel.resubscribing = True
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write(connection))
            group.create_task(self._read(connection))

    async def _write(self, connection) -> None:
        """Keep the connection subscribed to exactly the channels that have streams."""
        ping_interval = settings.SSE_HEARTBEAT_SECONDS
        while True:
            self.changed.clear()
            for name in [name for name, channel in self.channels.items() if not channel.inboxes]:
                del self.channels[name]
            wanted = set(self.channels)
            to_subscribe, to_unsubscribe = wanted - self.subscribed, self.subscribed - wanted
            self.subscribed = wanted
            self.unconfirmed.update(to_subscribe)  # before sending: the reply may be read at once
            if to_subscribe:
                await connection.send_command("SUBSCRIBE", *to_subscribe)
            if to_unsubscribe:
                await connection.send_command("UNSUBSCRIBE", *to_unsubscribe)
            try:
                async with asyncio.timeout(ping_interval):
                    await self.changed.wait()
            except TimeoutError:
                await connection.send_command("PING")  # the reader expects a reply to each

    async def _read(self, connection) -> None:
        """Fan messages out; a connection silent for three ping intervals is taken for dead."""
        silence_limit = 3 * settings.SSE_HEARTBEAT_SECONDS
        while True:
            reply = await connection.read_response(timeout=silence_limit, disconnect_on_error=False)
            if reply is None:
                raise aioredis.ConnectionError(f"no reply from Redis for {silence_limit} s")
            if not isinstance(reply, list):
                continue  # PONG before the first subscription
            kind = reply[0]
            if kind == b"message":
                self._deliver(reply[1].decode(), reply[2].decode())
            elif kind == b"subscribe":
                self._confirm(reply[1].decode())

    def _deliver(self, name: str, data_text: str) -> None:
        channel = self.channels.get(name)
        if channel is None:
            return
        try:
            event = json.loads(data_text)  # once here, not once per stream: thousands may follow it
            message = (event["seq"], data_text, _ends_stream(event["type"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed event on %s", name)
            return
        for inbox in channel.inboxes:
            inbox.put(message)

    def _confirm(self, name: str) -> None:
        """A `subscribe` reply; the channel is confirmed when the last SUBSCRIBE sent is answered."""
        self.unconfirmed[name] -= 1
        if self.unconfirmed[name] > 0:
            return
        del self.unconfirmed[name]
        channel = self.channels.get(name)
        if channel is None or name not in self.subscribed:
            return
        if channel.resubscribing:
            channel.resubscribing = False
            for inbox in channel.inboxes:
                inbox.ask_reread()  # what was published while the listener was away is in the log
        channel.confirmed.set()


def _listener() -> _Listener:
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None:
        listener = _listeners[loop] = _Listener()
    return listener


def stream_is_over(execution: Execution, after_seq: int) -> bool:
    """Whether a stream resumed after `after_seq` would end at once, from the row just read (no
    query): an ended execution's log is complete, since its final transition wrote the last event
    (final, error, batch_completed) in the same transaction, and `last_event_seq` counts them all.
    A purged execution's log is erased: there is nothing to stream, from any seq."""
    if execution.is_purged:
        return True
    return after_seq > 0 and execution.state in TERMINAL_STATES and after_seq >= execution.last_event_seq


# --- the streams ----------------------------------------------------------------------------------


def _ends_stream(type_: str, is_latest: bool = True) -> bool:
    """After final/error/batch_completed; after `suspended` unless events follow it (it was resumed)."""
    return type_ in END_OF_STREAM_TYPES or (type_ == PAUSE_TYPE and is_latest)


async def follow_events(execution_id: uuid.UUID, after_seq: int = 0, heartbeat: float | None = None):
    """Yield (seq, event JSON text) after `after_seq` in order, live, to the end of the stream;
    yield None whenever `heartbeat` seconds pass without an event. When the database stays
    unreachable the stream ends early (the client resumes it with Last-Event-ID)."""
    heartbeat = heartbeat or settings.SSE_HEARTBEAT_SECONDS
    listener = _listener()
    inbox = await listener.join(channel_name(execution_id))
    SSE_STREAMS_OPEN.inc()
    try:
        async with contextlib.aclosing(_follow(execution_id, after_seq, heartbeat, inbox)) as events:
            async for item in events:
                yield item
    except psycopg.Error:
        logger.warning("ending the stream of %s: the event log cannot be read", execution_id, exc_info=True)
    finally:
        SSE_STREAMS_OPEN.dec()
        listener.leave(inbox)  # also when the client went away (the generator is closed or cancelled)


async def _follow(execution_id: uuid.UUID, last: int, heartbeat: float, inbox: _Inbox):
    need_log_read = True
    while True:
        if need_log_read:
            rows = await read_log(execution_id, last)
            for index, (seq, data_text) in enumerate(rows):
                yield seq, data_text
                last = seq
                if _ends_stream(json.loads(data_text).get("type"), is_latest=index == len(rows) - 1):
                    return
            if len(rows) == READ_BATCH:
                continue
            if not rows and await log_has_ended(execution_id, last):
                return  # resumed after the end: nothing more will come
            need_log_read = False
        messages, need_log_read = await inbox.take(timeout=heartbeat)
        if not messages and not need_log_read:
            yield None  # idle for a heartbeat: tell the client, and check the log
            need_log_read = True
            continue
        if need_log_read:
            SSE_LOG_REREADS.labels("resync").inc()
            continue  # the log holds these messages too
        for seq, data_text, ends in messages:
            if seq <= last:
                continue  # already sent from the log
            if seq != last + 1:
                SSE_LOG_REREADS.labels("gap").inc()
                need_log_read = True  # a gap: fill it from the log
                break
            yield seq, data_text
            last = seq
            if ends:
                return


async def relay_events(execution_id: uuid.UUID, after_seq: int = 0):
    """The SSE body: one `id:`/`data:` frame per event, a comment line as heartbeat."""
    async for item in follow_events(execution_id, after_seq):
        if item is None:
            yield ": heartbeat\n\n"
        else:
            seq, data_text = item
            yield f"id: {seq}\ndata: {data_text}\n\n"


async def close_loop_resources() -> None:
    """Close the current event loop's pool and listener (for short-lived loops, e.g. tests)."""
    loop = asyncio.get_running_loop()
    pool, listener = _pools.pop(loop, None), _listeners.pop(loop, None)
    if listener is not None:
        await listener.aclose()
    if pool is not None:
        await pool.close()
