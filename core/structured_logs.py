"""Structured logs: fields bound to the work in progress, and the two output formats.

Code logs with the standard `logging` module as before. What is known about the current work is
bound once in a context variable (`bind_context`): request_id and workspace_id by the API
(api/http/middleware.AccessLogMiddleware, accounts/authentication), execution_id, attempt and
workspace_id by the worker when it claims an execution (workers/runtime.py). `ContextFilter`
copies them onto every record, so every line says which request or execution it is about, down
to the libraries' own lines. A context variable follows a request through asyncio tasks and
asgiref's thread hops (asgiref copies it into the thread and back), and it is reset where it was
bound (a Celery thread runs many executions one after another).

Formats (settings.LOG_FORMAT): `json`, one JSON object per line (python-json-logger) with `time`,
`level`, `logger`, `message`, the bound fields and the call's `extra`; `console`, a readable line
with the same fields as `key=value` after the message. Both pass the finished line, traceback
included, through core/log_hygiene.redact_text: no signed token of a URL reaches a log.
"""

import contextvars
import logging

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from core.log_hygiene import redact_text

# The bound fields; a new dict at each bind (never changed in place), so a context copy cannot see later binds.
_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("log_context", default=None)

# A record's own attributes; anything else on it is a bound field or an `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def bind_context(**fields) -> contextvars.Token:
    """Add fields to the current context's log lines; returns the token for `reset_context`."""
    return _context.set({**(_context.get() or {}), **fields})


def reset_context(token: contextvars.Token) -> None:
    _context.reset(token)


def bound_context() -> dict:
    return _context.get() or {}


class ContextFilter(logging.Filter):
    """Puts the bound fields on every record that passes the handler (a field the call passed in
    `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


class JsonFormatter(_JsonFormatter):
    def __init__(self, *args, **kwargs):
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class ConsoleFormatter(logging.Formatter):
    """`2026-12-01 15:00:00,000 INFO workers.runtime execution attempt ended  execution_id=... attempt=1`."""

    def __init__(self, *args, **kwargs):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}
        if fields:
            head, newline, rest = line.partition("\n")  # a traceback stays below the fields
            line = head + "  " + " ".join(f"{k}={v}" for k, v in fields.items()) + newline + rest
        return redact_text(line)
