"""The one JSON encoding of what the platform stores: events, checkpoints, outputs, tool results.

Why: Python's `json` writes `NaN`, `Infinity` and `-Infinity` (and reads them, and reads `1e999` as
infinity), but PostgreSQL's jsonb refuses them: one such value in a statement fails the whole
statement, e.g. the worker's batch of the events of every run in flight (workers/event_writer.py).
So every writer encodes with `dumps` (or a JSON column's `FiniteJSONEncoder`), which refuses them
with `NonFiniteNumber` where the value is made, and what comes from outside (a tool's answer, a
model's arguments or text) is checked with `is_finite` or parsed with `loads`, which refuses them
too, so the caller can turn them into an error of its own (a tool error the model sees).
"""

import json
import math


class NonFiniteNumber(ValueError):
    """A value holds NaN or an infinity, which JSON (and jsonb) cannot carry."""


class FiniteJSONEncoder(json.JSONEncoder):
    """json's encoder with `allow_nan` forced off, for `JSONField(encoder=...)` and `dumps`."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_nan"] = False
        super().__init__(*args, **kwargs)

    def iterencode(self, o, _one_shot=False):
        try:
            yield from super().iterencode(o, _one_shot)
        except ValueError as exc:
            if "Out of range float" in str(exc):
                raise NonFiniteNumber("NaN and infinite numbers cannot be written as JSON.") from None
            raise


def dumps(value, **kwargs) -> str:
    """`json.dumps` that raises NonFiniteNumber on NaN or an infinity."""
    return json.dumps(value, cls=FiniteJSONEncoder, **kwargs)


def _refuse_constant(name: str):
    raise NonFiniteNumber(f"{name} is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise NonFiniteNumber(f"{text} is out of the range of a JSON number.")
    return value


def loads(text):
    """`json.loads` that raises NonFiniteNumber (a ValueError) on `NaN`, `Infinity` or `1e999`."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def is_finite(value) -> bool:
    """True when `value` (made of dicts, lists and scalars) holds no NaN and no infinity."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True
