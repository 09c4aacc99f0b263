"""GET /healthz: 200 when PostgreSQL and Redis answer, 503 otherwise."""

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def _check_postgres() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "not healthy", reported by name
        return f"error: {type(exc).__name__}"


def _check_redis() -> str:
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def healthz(request):
    checks = {"postgres": _check_postgres(), "redis": _check_redis()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )
