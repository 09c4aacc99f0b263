"""GET /healthz: 200 when PostgreSQL and Redis answer, 503 otherwise, within HEALTH_TIMEOUT_SECONDS.

The two checks run at once on two threads of their own (not the ASGI server's sync threads, which
requests stuck on a dead database may all hold), each bounded: the pooled connection is waited for
at most the timeout and its query has a statement timeout; without a pool (housekeeping, a test
process) a fresh connection is opened with libpq's connect_timeout. A probe therefore learns in
about a second that PostgreSQL is down, instead of after the pool's own wait (it hung 14.6 s).
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import psycopg
import redis
from django.conf import settings
from django.db import connections
from django.http import JsonResponse

HEALTH_TIMEOUT_SECONDS = 1.5
_threads = ThreadPoolExecutor(4, thread_name_prefix="healthz")


def _select_one(conn) -> None:
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(HEALTH_TIMEOUT_SECONDS * 1000)}")
        conn.execute("SELECT 1")


def _check_postgres() -> str:
    database = connections["default"]
    try:
        pool = database.pool
        if pool is not None:
            pool.open()  # as Django does before its first connection (a no-op once open)
            with pool.connection(timeout=HEALTH_TIMEOUT_SECONDS) as conn:
                _select_one(conn)
        else:
            params = database.get_connection_params()
            params = {key: params[key] for key in ("host", "port", "dbname", "user", "password") if params.get(key)}
            with psycopg.connect(**params, connect_timeout=2, autocommit=True) as conn:
                _select_one(conn)
        return "ok"
    except Exception as exc:  # any failure means "not healthy", reported by name
        return f"error: {type(exc).__name__}"


def _check_redis() -> str:
    try:
        timeout = HEALTH_TIMEOUT_SECONDS
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


async def _bounded(check) -> str:
    try:
        return await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(_threads, check), HEALTH_TIMEOUT_SECONDS + 0.3
        )
    except TimeoutError:
        return "error: timeout"


async def healthz(request):
    postgres, redis_ = await asyncio.gather(_bounded(_check_postgres), _bounded(_check_redis))
    checks = {"postgres": postgres, "redis": redis_}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )
