"""Query-string parameters of every surface, checked the same way: a bad value is a 400 naming the
parameter, never clamped silently."""

from core.errors import ApiError

# Digits of the largest number a parameter may hold: every one ends in a PostgreSQL bigint (an
# offset, a seq, an id) whose largest value has 19 digits, and int() refuses strings of more than
# 4,300 digits (a ValueError, not a number), so longer ones are refused before either.
MAX_INTEGER_DIGITS = 18


def natural_number(text: str) -> int | None:
    """A non-negative integer written in ASCII digits (leading zeros allowed), below 10**18; None
    for anything else ("²" is a digit to str.isdigit but not to int())."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text.lstrip("0")) > MAX_INTEGER_DIGITS:
        return None
    return int(text)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def int_query_param(params, name: str, default: int, low: int, high: int | None = None, code: str | None = None) -> int:
    """An integer from `low` to `high` (no upper bound when None, below 10**18 in any case), given
    at most once; `default` when absent. The error code is `invalid_<name in snake case>` unless the
    surface uses another."""
    code = code or f"invalid_{_snake(name)}"
    values = params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise ApiError(400, code, f"{name} must be given once.", field=name)
    value = natural_number(values[0])
    if value is None or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low} (at most 18 digits)"
        raise ApiError(400, code, f"{name} must be an integer {bounds}.", field=name)
    return value
