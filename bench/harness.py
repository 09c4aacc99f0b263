"""What every scenario shares: the platform's processes, the database, timing statistics.

The API (uvicorn) and the Celery worker are started with `ops/processes.py`, each in its own
process group, and always stopped (SIGTERM, then SIGKILL to the whole group after a grace period). Their
output goes to bench/results/<name>.log.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import redis

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"


# --- statistics -------------------------------------------------------------------------------


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latency_ms(seconds: list[float]) -> dict:
    """p50/p90/p99/mean in milliseconds of a list of durations in seconds."""
    if not seconds:
        return {"n": 0}
    return {
        "n": len(seconds),
        **{f"p{q}_ms": round(percentile(seconds, q) * 1000, 1) for q in (50, 90, 99)},
        "mean_ms": round(sum(seconds) / len(seconds) * 1000, 1),
    }


def cpu_summary(cpu: dict, done: int) -> dict:
    """Machine busy %, CPU ms per unit of work (cores x busy / throughput) and per process kind."""
    from bench.procstat import CORES

    per_unit = {kind: round(seconds * 1000 / done, 2) for kind, seconds in cpu["cpu_seconds"].items()} if done else {}
    machine = cpu["seconds"] * CORES * cpu["machine_busy_pct"] / 100
    return {
        "machine_busy_pct": round(cpu["machine_busy_pct"], 1),
        "cpu_ms_per_op": round(machine * 1000 / done, 2) if done else None,
        "cpu_ms_per_op_by_process": per_unit,
    }


# --- database ------------------------------------------------------------------------------------


def database_url(name: str | None = None) -> str:
    """DATABASE_URL, or the same server with another database name."""
    from django.conf import settings

    url = settings.DATABASE_URL
    if name is None:
        return url
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def connect(name: str | None = None) -> psycopg.Connection:
    url = database_url(name).replace("postgres://", "postgresql://", 1)
    return psycopg.connect(url, autocommit=True)


# --- processes -----------------------------------------------------------------------------------


def embedded_postgres() -> bool:
    """The bench runs on this checkout's embedded PostgreSQL (not on a DATABASE_URL of the caller)."""
    from django.conf import settings

    from ops import local_services

    return settings.DATABASE_URL == local_services.database_url()


def _pid_from(path: Path) -> int | None:
    return int(path.read_text().split()[0]) if path.exists() else None


def postgres_pid() -> int | None:
    """The postmaster of the embedded server (its backends are its children)."""
    from ops import local_services

    return _pid_from(local_services.DATA_DIR / "postgres" / "postmaster.pid") if embedded_postgres() else None


def redis_pid() -> int | None:
    from django.conf import settings

    from ops import local_services

    if settings.REDIS_URL != local_services.redis_url():
        return None
    return _pid_from(local_services.DATA_DIR / "redis" / "redis.pid")


def redis_client() -> redis.Redis:
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


class Platform:
    """The API and worker processes under test; `database` selects the database they use."""

    def __init__(self, port: int, worker_concurrency: int):
        self.port, self.worker_concurrency = port, worker_concurrency
        self.api = self.worker = None
        self.database = None  # None: DATABASE_URL itself
        RESULTS.mkdir(exist_ok=True)
        for name in ("api", "worker"):
            (RESULTS / f"{name}.log").write_bytes(b"")  # this run's output only

    def _env(self, extra: dict) -> dict:
        from django.conf import settings

        return {
            **os.environ,
            "DATABASE_URL": database_url(self.database),
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def _spawn(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(RESULTS / f"{name}.log", "ab")
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_api(self) -> None:
        from ops import processes

        command, env = processes.api(HOST, self.port, "--log-level", "warning")
        self.api = self._spawn("api", command, self._env({**env, "PGAPPNAME": "bench-api"}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited ({self.api.returncode}); see {RESULTS / 'api.log'}")
            try:
                if httpx.get(f"http://{HOST}:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the API did not answer /healthz within 60 s")

    def start_worker(self, concurrency: int | None = None) -> None:
        """Start the worker and wait until it answers a bare task (it is consuming)."""
        from django.conf import settings

        from ops import processes

        command, env = processes.worker(
            concurrency or self.worker_concurrency,
            ",".join(settings.EXECUTION_QUEUES),
            "--without-mingle",
            "--without-gossip",
        )
        self.worker = self._spawn(
            "worker", command + ["--loglevel", "WARNING"], self._env({**env, "PGAPPNAME": "bench-worker"})
        )
        from config.celery import app

        broker, reply_key = redis_client(), unique("bench:ready")
        app.send_task("workers.tasks.noop_roundtrip", args=[reply_key])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.worker.returncode}); see {RESULTS / 'worker.log'}")
            if broker.blpop(reply_key, timeout=1) is not None:
                return
        raise RuntimeError("the worker did not run a task within 90 s")

    @staticmethod
    def _stop(process: subprocess.Popen | None, grace: float = 15) -> None:
        if process is None or process.poll() is not None:
            return
        try:
            process.send_signal(signal.SIGTERM)  # the main process shuts down its children itself
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass
        # children that outlived their parent (e.g. prefork children) are in the same group
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_worker(self, grace: float = 15) -> None:
        self._stop(self.worker, grace)
        self.worker = None

    def stop_api(self) -> None:
        self._stop(self.api)
        self.api = None

    def stop(self) -> None:
        self.stop_worker()
        self.stop_api()

    @contextmanager
    def running(self, database: str | None = None, worker_concurrency: int | None = None):
        """The API and a worker on `database` for the duration of the block."""
        self.stop()
        self.database = database
        try:
            self.start_api()
            self.start_worker(worker_concurrency)
            yield self
        finally:
            self.stop()

    def process_kinds(self) -> dict:
        """For procstat.CpuMeter: the process trees whose CPU is reported separately."""
        return {
            "api": (self.api.pid if self.api else None, True),
            "worker": (self.worker.pid if self.worker else None, True),
            "postgres": (postgres_pid(), True),
            "redis": (redis_pid(), True),
            "bench client": (os.getpid(), False),
        }

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (inherited by the API and the worker) as far as the hard limit allows."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
