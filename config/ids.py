"""Ids in paths: the agents API prefixes them (`agent:<uuid>`, `execution:<uuid>`); bare UUIDs work too."""

import uuid


def parse_prefixed_id(value: str, prefix: str) -> uuid.UUID | None:
    if value.startswith(prefix + ":"):
        value = value[len(prefix) + 1:]
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
