"""How to start the platform's processes; shared by `make run`, the tests and the benchmark.

Each process kind gets its database connection policy (see DATABASES in settings).
"""

import sys

API_ENV = {"DB_POOL_MAX_SIZE": "10", "DB_APPLICATION_NAME": "skillrun-api"}
WORKER_ENV = {"DB_CONN_MAX_AGE": "300", "DB_APPLICATION_NAME": "skillrun-worker"}


def api(host: str, port: int, *extra: str) -> tuple[list[str], dict]:
    command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", str(port),
               "--no-access-log", "--timeout-graceful-shutdown", "5", *extra]
    return command, API_ENV


def worker(concurrency: int, queue: str, *extra: str) -> tuple[list[str], dict]:
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
               "--concurrency", str(concurrency), "--queues", queue, *extra]
    return command, WORKER_ENV


def beat(schedule_path: str) -> tuple[list[str], dict]:
    return [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
            "--schedule", schedule_path], WORKER_ENV
