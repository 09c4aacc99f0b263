"""Ids in paths: the agents API prefixes them (`agent:<uuid>`, `execution:<uuid>`); bare UUIDs work too."""

import os
import threading
import time
import uuid

_last_uuid7 = 0
_uuid7_lock = threading.Lock()


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def parse_prefixed_id(value: str, prefix: str) -> uuid.UUID | None:
    if value.startswith(prefix + ":"):
        value = value[len(prefix) + 1 :]
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562, version 7): 48 bits of Unix milliseconds, then random bits.

    Execution ids use it so that a new execution's row and its events land at the end of the
    primary-key and `(execution_id, seq)` indexes instead of on a random page of them (uuid4): on a
    table of 1M executions and 20M events, the first event of a new execution read pages from disk
    (bench/README.md, "history"). Our own because the standard library has uuid7 from Python 3.14 on.
    Ids are never secrets here (every read is scoped to the caller's key), so the visible time is fine.

    Within a process the ids are strictly increasing, also in the same millisecond (RFC 9562's
    "monotonic random" method: one more than the last one): the running cap's queue is FIFO by id.
    """
    global _last_uuid7
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    with _uuid7_lock:
        if value <= _last_uuid7:  # the same millisecond (or the clock stepped back)
            value = _last_uuid7 + 1  # into the low 62 random bits; a carry past them: never in practice
        _last_uuid7 = value
    return uuid.UUID(int=value)
