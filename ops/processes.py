"""How to start the platform's processes; shared by `make run`, the tests and the benchmark.

Each process kind gets its database connection policy (see DATABASES in settings):
- api: uvicorn (ASGI), Django's psycopg pool of 10;
- worker: Celery's threads pool, one thread per run in flight (`concurrency` of them), sharing a
  pool of WORKER_DB_POOL_SIZE connections. Threads rather than prefork: a run spends its life waiting
  on a model stream, which a thread does for ~100 KiB and no CPU where a forked child costs a whole
  Django process. Threads rather than gevent or an asyncio runner: every library we call (psycopg,
  the model SDKs, boto3, Langfuse's OpenTelemetry exporter) works unchanged, with no monkey-patching;
  the GIL is no limit for runs that mostly wait;
- webhooks: Celery's threads pool on the webhooks queue alone (WEBHOOK_WORKER_CONCURRENCY deliveries
  at once, each waiting on someone else's server): a backlog of deliveries to endpoints that never
  answer holds these threads, never an execution's;
- housekeeping: beat plus a small threads pool on the housekeeping queue (reaper, purge, the
  webhooks' sweep) and the schedules' queue, so they never wait behind a backlog of executions, and
  the tick has a thread while a long purge runs. Run exactly one.

Each process kind consumes its own queues (settings: one per kind of work), so that no backlog of
one delays another; the worker's three (first runs, resumes, media polls) share its threads, the
broker handing out resumes first (executions/fairness.py).
"""

import sys

from django.conf import settings

# The API's sync calls never wait for a connection (as many threads as connections, config/asgi.py):
# a pool wait that lasts is PostgreSQL being down, answered 503 after 3 s.
API_ENV = {"DB_POOL_MAX_SIZE": "10", "DB_POOL_TIMEOUT_SECONDS": "3", "DB_APPLICATION_NAME": "skillrun-api"}
# httptools with a deadline on a request's headers (ops/http_protocol.py says why), and an idle
# kept-alive connection closed after this many seconds (docker-compose.yml's api says the same).
HTTP_PROTOCOL = "ops.http_protocol:DeadlineHttpToolsProtocol"
KEEP_ALIVE_SECONDS = 5


def api(host: str, port: int, *extra: str) -> tuple[list[str], dict]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "config.asgi:application",
        "--host",
        host,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        HTTP_PROTOCOL,
        "--timeout-keep-alive",
        str(KEEP_ALIVE_SECONDS),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
        *extra,
    ]
    return command, API_ENV


def _celery(quiet: bool) -> list[str]:
    """`quiet`: without Celery's banner of some 20 lines at each start (`make run`'s console)."""
    return [sys.executable, "-m", "celery", "-A", "config", *(["--quiet"] if quiet else []), "worker"]


def _threads_worker(concurrency: int, queues: str, extra: tuple, quiet: bool) -> list[str]:
    return [
        *_celery(quiet),
        "--loglevel",
        "INFO",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--queues",
        queues,
        *extra,
    ]


def worker(
    concurrency: int, queue: str = ",".join(settings.EXECUTION_QUEUES), *extra: str, quiet: bool = False
) -> tuple[list[str], dict]:
    command = _threads_worker(concurrency, queue, extra, quiet)
    return command, {"DB_POOL_MAX_SIZE": str(settings.WORKER_DB_POOL_SIZE), "DB_APPLICATION_NAME": "skillrun-worker"}


def webhooks(*extra: str, quiet: bool = False) -> tuple[list[str], dict]:
    command = _threads_worker(settings.WEBHOOK_WORKER_CONCURRENCY, settings.WEBHOOKS_QUEUE, extra, quiet)
    return command, {"DB_POOL_MAX_SIZE": "4", "DB_APPLICATION_NAME": "skillrun-webhooks"}


HOUSEKEEPING_THREADS = 3  # the reaper and the sweep every few seconds, the tick beside an hour-long purge


def housekeeping(schedule_path: str, *extra: str, quiet: bool = False) -> tuple[list[str], dict]:
    command = [
        *_celery(quiet),
        "--beat",
        "--schedule",
        schedule_path,
        "--loglevel",
        "INFO",
        "--pool",
        "threads",
        "--concurrency",
        str(HOUSEKEEPING_THREADS),
        "--queues",
        f"{settings.HOUSEKEEPING_QUEUE},{settings.SCHEDULES_QUEUE}",
        *extra,
    ]
    return command, {"DB_CONN_MAX_AGE": "300", "DB_APPLICATION_NAME": "skillrun-housekeeping"}
