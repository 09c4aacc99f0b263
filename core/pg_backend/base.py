"""Django's PostgreSQL backend, with one change to its connection pool: recovery after a restart.

After a PostgreSQL restart (or pg_terminate_backend) every idle pooled connection is broken, and
psycopg_pool's getconn finds them one at a time, pausing longer after each failure (1 s, 2 s,
4 s, ...; psycopg/psycopg#711): a full pool takes ~30 s, during which requests fail with
PoolTimeout. Django always passes its own `check` (ConnectionPool.check_connection) and has no
setting for another, so this backend swaps it on the pool Django built: the first broken
connection makes the pool check all its idle ones at once (`pool.check()`, the remedy psycopg's
authors give), and the next attempt gets a fresh connection.

`_check` is psycopg_pool's private attribute for the check it was built with: Django offers no hook
for another (it passes `check=` itself, so the pool options cannot), and psycopg_pool none after
construction. Checked against psycopg_pool 3.3.3 (the lock's); tests/test_pg_backend.py fails if the
attribute moves or stops being the one getconn calls.
"""

from django.db.backends.postgresql import base
from psycopg import Error as PsycopgError
from psycopg_pool import ConnectionPool


def _check_all_when_one_is_broken(pool: ConnectionPool):
    def check(conn) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except PsycopgError:
            pool.check()
            raise

    return check


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and pool._check is ConnectionPool.check_connection:  # once, on the pool Django built
            pool._check = _check_all_when_one_is_broken(pool)
        return pool
