"""Timestamps in JSON: ISO 8601 in UTC with a `Z`, as every surface writes them."""


def iso_utc(value):
    return value.isoformat().replace("+00:00", "Z") if value else None
