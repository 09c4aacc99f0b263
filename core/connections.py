"""Giving a pooled database connection back while a thread waits on something else."""

from django.db import connection


def release_connection() -> None:
    """Before a thread waits (a model, a tool, a timer, a webhook's HTTP request): its database
    connection goes back to the pool, so hundreds of waiting threads need no more connections than
    the few that are writing. Without a pool (a test process, inside the test's transaction) the
    connection stays."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()
