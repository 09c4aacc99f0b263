"""The platform's runtime at AI scale, side by side with a bare Celery round trip, in ONE run.

Same PostgreSQL, same Redis, a real uvicorn API and a real Celery worker (ops/processes.py).
Phases (each capped in time; bench/README.md says what each row measures):

  celery      1. bare Celery round trip: sequential, and 16 closed-loop clients (the baseline)
  noop        2. sequential no-op POST /agents/{id}/execute (sync, JSON) -> completed
  load        3. 16 and 64 closed-loop clients of the same: throughput, latency, CPU per execution
  statements  4. SQL statements per no-op execution (pg_stat_statements, pg_stat_database)
  stream      5. 10-chunk agent over POST /agents/{id}/execute/stream: first and final event
  fanout      7. 1,000 and 5,000 SSE clients on one execution: connected, memory, delivery latency
  inflight    6. 500 executions of ~2 s in flight at once on one worker
  fairness    9. one workspace's burst of 10,000 queued, another workspace's no-op latency meanwhile
  history     8. the no-op on an empty vs a 1M-execution / 20M-event database, with plans (--no-history: off)

On the embedded PostgreSQL it runs durable: fsync on (the server is restarted with it if it runs
without) and synchronous_commit on. --fsync-off runs the phases a second time on the same server
restarted with fsync=off (the old default) and prints those figures beside the durable ones; the
server is restarted durable at the end.

Usage: `make bench`, or e.g.
  .venv/bin/python bench/run_bench.py --phases celery,noop --requests 100
  .venv/bin/python bench/run_bench.py --inflight-concurrency 8 --no-history
  .venv/bin/python bench/run_bench.py --phases celery,noop,load --requests 100 --no-history --fsync-off
Writes bench/results/latest.json; the API's and worker's output go to bench/results/*.log.
"""

import argparse
import json
import logging
import os
import platform as pyplatform
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # `bench` as a package; nothing in bench/ shadows a standard module
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench import harness  # noqa: E402

OPEN_FILES = harness.raise_open_files_limit()  # before the servers start: they inherit it

from ops import local_services  # noqa: E402

EMBEDDED_POSTGRES = not os.environ.get("DATABASE_URL")
if local_services.uses_local_services():
    os.environ.update(local_services.ensure_started())

import django  # noqa: E402

django.setup()
logging.getLogger("httpx").setLevel(logging.WARNING)  # the health checks while processes start

from django.core.management import call_command  # noqa: E402

from bench import fixtures, report  # noqa: E402
from bench.scenarios import celery_baseline, fairness, history, inflight, noop, statements, streams  # noqa: E402

PHASES = ["celery", "noop", "load", "statements", "stream", "fanout", "inflight", "fairness", "history"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((harness.HOST, 0))
        return sock.getsockname()[1]


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated, in this order: " + ",".join(PHASES)
    )
    parser.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the history phase (its first run fills bench_history: ~2.5 min on 2 cores)",
    )
    parser.add_argument("--requests", type=int, default=200, help="sequential requests of rows 1 and 2")
    parser.add_argument("--seconds", type=float, default=20, help="duration of each closed-loop run")
    parser.add_argument("--clients", type=int_list, default=[16, 64], help="closed-loop clients of row 3")
    parser.add_argument("--baseline-clients", type=int, default=16)
    parser.add_argument("--statement-executions", type=int, default=100)
    parser.add_argument("--stream-requests", type=int, default=50)
    parser.add_argument("--stream-delay-ms", type=int, default=20, help="between the 10 chunks of row 5")
    parser.add_argument("--fanout", type=int_list, default=[1000, 5000], help="SSE clients of row 7")
    parser.add_argument("--fanout-delay-ms", type=int, default=250, help="between the 20 chunks of row 7")
    parser.add_argument("--inflight", type=int, default=500, help="executions started at once in row 6")
    parser.add_argument(
        "--inflight-concurrency",
        type=int,
        default=500,
        help="the row 6 worker's --concurrency (use a small one with the prefork pool)",
    )
    parser.add_argument("--inflight-cap", type=float, default=90, help="seconds before row 6 stops")
    parser.add_argument("--fairness-burst", type=int, default=10_000, help="executions one workspace queues in row 9")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="the worker of the other rows")
    parser.add_argument("--history-executions", type=int, default=1_000_000)
    parser.add_argument("--history-refill", action="store_true")
    parser.add_argument("--port", type=int, default=0, help="the API's port (default: a free one)")
    parser.add_argument(
        "--fsync-off",
        action="store_true",
        help="run the phases again on the embedded PostgreSQL restarted with fsync=off, as a second column",
    )
    args = parser.parse_args()
    if args.fsync_off and not EMBEDDED_POSTGRES:
        parser.error("--fsync-off restarts this checkout's embedded PostgreSQL: unset DATABASE_URL")
    args.phases = [p for p in PHASES if p in args.phases.split(",") and (p != "history" or args.history)]
    args.port = args.port or free_port()
    return args


def machine_info() -> dict:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    with harness.connect() as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        synchronous_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    redis_info = harness.redis_client().info("server")
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(int(meminfo["MemTotal"].split()[0]) / 2**20, 1),
        "python": pyplatform.python_version(),
        "kernel": pyplatform.release(),
        "postgresql": pg_version,
        "fsync": fsync,
        "synchronous_commit": synchronous_commit,
        "shared_preload_libraries": preload,
        "redis": redis_info["redis_version"],
        "open_files_limit": OPEN_FILES,
        "load_average_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def run_phases(args, platform, fixture) -> dict:
    results = {}
    kinds = platform.process_kinds
    key, agents = fixture["key"], fixture["agents"]

    def phase(name, function, own_processes=False):
        if name not in args.phases:
            return
        harness.log(f"phase {name}")
        started = time.perf_counter()
        try:
            if not own_processes and (platform.api is None or platform.api.poll() is not None):
                platform.start_api()  # a phase may have brought it down
            if not own_processes and (platform.worker is None or platform.worker.poll() is not None):
                platform.start_worker()
            results[name] = function()
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next phase
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        harness.log(f"phase {name} took {time.perf_counter() - started:.0f} s")

    phase(
        "celery",
        lambda: {
            "sequential": celery_baseline.sequential(args.requests),
            "closed_loop": celery_baseline.closed_loop(args.baseline_clients, args.seconds, kinds()),
        },
    )
    phase("noop", lambda: noop.sequential(args.port, agents["noop"], key, args.requests))
    phase(
        "load",
        lambda: [
            noop.closed_loop(args.port, agents["noop"], key, clients, args.seconds, kinds()) for clients in args.clients
        ],
    )

    def count_statements():
        with harness.connect() as conn:
            return statements.measure(
                conn, lambda n: noop.sequential(args.port, agents["noop"], key, n, warmup=0), args.statement_executions
            )

    phase("statements", count_statements)
    phase(
        "stream",
        lambda: streams.stream_latency(args.port, agents["stream10"], key, args.stream_requests, args.stream_delay_ms),
    )
    phase("fanout", lambda: [streams.fanout(platform, fixture, clients) for clients in args.fanout])
    phase(
        "inflight", lambda: inflight.run(platform, fixture, args.inflight, args.inflight_concurrency, args.inflight_cap)
    )
    phase("fairness", lambda: fairness.run(platform, fixture, fixtures.create(), args.fairness_burst))
    phase(
        "history",
        lambda: history.run(
            platform, args.history_executions, args.history_refill, requests=args.requests, explained=30
        ),
        own_processes=True,
    )
    return results


def server_fsync() -> bool:
    with harness.connect() as conn:
        return conn.execute("SHOW fsync").fetchone()[0] == "on"


def restart_postgres(fsync: bool) -> None:
    """This checkout's embedded PostgreSQL restarted with fsync on or off (the API and the worker
    are stopped first; a `make run` of the checkout sees a restart, which its pools survive)."""
    from django.db import connections

    harness.log(f"restarting the embedded PostgreSQL with fsync={'on' if fsync else 'off'}")
    connections.close_all()
    local_services.restart_postgres(fsync)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still runs the finally blocks
    args = parse_args()
    started = time.perf_counter()
    if EMBEDDED_POSTGRES and not server_fsync():  # e.g. a server a test session left running
        restart_postgres(fsync=True)
    call_command("migrate", interactive=False, verbosity=0)
    fixture = fixtures.create(stream_delay_ms=args.stream_delay_ms, fanout_delay_ms=args.fanout_delay_ms)
    info = machine_info()
    harness.log(f"API on port {args.port}; phases: {', '.join(args.phases)}")
    platform = harness.Platform(args.port, args.worker_concurrency)
    fsync_off = None
    try:
        platform.start_api()
        platform.start_worker()
        results = run_phases(args, platform, fixture)
        if args.fsync_off:
            platform.stop()  # run_phases starts them again, on the restarted server
            fsync_off = {"load_average_at_start": os.getloadavg()}
            restart_postgres(fsync=False)
            if server_fsync():
                raise RuntimeError("the embedded PostgreSQL still runs with fsync on")
            harness.log("the same phases with fsync=off")
            fsync_off["results"] = run_phases(args, platform, fixture)
    finally:
        platform.stop()
        if fsync_off is not None:  # back to durable, also after an error
            restart_postgres(fsync=True)
    output = {
        "machine": info,
        "args": {k: v for k, v in vars(args).items()},
        "total_seconds": round(time.perf_counter() - started),
        "results": results,
        **({"fsync_off": fsync_off} if fsync_off and "results" in fsync_off else {}),
    }
    harness.RESULTS.mkdir(exist_ok=True)
    (harness.RESULTS / "latest.json").write_text(json.dumps(output, indent=2, default=str))
    print(report.render(output))
    harness.log(f"done in {output['total_seconds']} s; bench/results/latest.json written")


if __name__ == "__main__":
    main()
