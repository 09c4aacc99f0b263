"""Query-string parameters of every surface, checked the same way: a bad value is a 400 naming the
parameter, never clamped silently."""

from core.errors import ApiError


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def int_query_param(params, name: str, default: int, low: int, high: int | None = None, code: str | None = None) -> int:
    """An integer from `low` to `high` (no upper bound when None), given at most once; `default` when
    absent. The error code is `invalid_<name in snake case>` unless the surface uses another."""
    code = code or f"invalid_{_snake(name)}"
    values = params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise ApiError(400, code, f"{name} must be given once.", field=name)
    raw = values[0].strip()
    if not raw.isascii() or not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ApiError(400, code, f"{name} must be an integer {bounds}.", field=name)
    return int(raw)
