"""Row 6: in-flight scale. N executions of an agent whose built-in model streams 20 chunks x
100 ms (~2 s of waiting, as on a real model) are started at once, each by its own
`POST /agents/{id}/execute/stream` client that leaves after the `start` event (so that the API's
stream capacity, measured in row 7, does not limit this row), on a worker started with an
in-flight capacity of `--inflight-concurrency`. Completion is read from the rows. Reported: wall
time from the first POST to the last `finished_at` (ideal: the 2 s of one execution),
executions/s, the peak of executions running at once, and the worker's RSS (its whole process
tree) idle vs at peak, per in-flight execution.

The phase is capped in time; what did not finish by then is reported, cancelled in the database
(so a later worker does not run it) and its task messages purged.
"""

import asyncio
import time

from bench.harness import HOST, connect, latency_ms, log
from bench.loadclient import Connection, HttpError
from bench.procstat import CpuMeter, tree_rss_mb, tree_size

TERMINAL = ("completed", "failed", "cancelled")


async def _run(platform, fixture: dict, executions: int, cap: float) -> dict:
    agent_id, version_id = fixture["agents"]["inflight"], fixture["agent_versions"]["inflight"]
    worker_pid = platform.worker.pid
    records = [{"posted": None, "start": None, "error": None} for _ in range(executions)]

    async def client(record):
        connection = Connection(HOST, platform.port)
        try:
            await connection.open()
            record["posted"] = time.perf_counter()
            async for event in connection.stream(
                "POST", f"/agents/{agent_id}/execute/stream", {"X-API-Key": fixture["key"]}, {"message": "go"}
            ):
                record["start"] = event.received
                break
            else:
                record["error"] = "the stream ended without an event"
        except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            record["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        finally:
            connection.close()

    samples = []  # (seconds since start, running, finished, worker RSS MB)

    def sample(conn, started):
        running, finished = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = ANY(%s))"
            " FROM executions_execution WHERE agent_version_id = %s",
            (list(TERMINAL), version_id),
        ).fetchone()
        samples.append((time.perf_counter() - started, running, finished, tree_rss_mb(worker_pid)))
        return finished

    conn = connect(platform.database)
    rss_idle, worker_processes = tree_rss_mb(worker_pid), tree_size(worker_pid)
    meter = CpuMeter(platform.process_kinds()).start()
    started, started_epoch = time.perf_counter(), time.time()
    tasks = [asyncio.create_task(client(record)) for record in records]
    deadline = started + cap
    while time.perf_counter() < deadline:
        finished = await asyncio.to_thread(sample, conn, started)
        if finished >= executions or (
            all(task.done() for task in tasks) and finished >= sum(1 for r in records if r["start"])
        ):
            break
        await asyncio.sleep(0.25)
    await asyncio.to_thread(sample, conn, started)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = meter.stop()
    created, completed, last_finished = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE state = 'completed'), extract(epoch FROM max(finished_at))"
        " FROM executions_execution WHERE agent_version_id = %s",
        (version_id,),
    ).fetchone()
    left = _cancel_leftovers(conn, version_id)
    conn.close()

    wall = float(last_finished) - started_epoch if last_finished and not left else None
    peak_running = max((s[1] for s in samples), default=0)
    rss_peak = max((s[3] for s in samples), default=rss_idle)
    return {
        "executions": executions,
        "created": created,
        "completed": completed,
        "start_errors": sum(1 for r in records if r["error"]),
        "first_errors": sorted({r["error"] for r in records if r["error"]})[:3],
        "capped": bool(left),
        "cap_seconds": cap,
        "left_cancelled": left,
        "wall_seconds": round(wall, 2) if wall else None,
        "per_s": round(completed / wall, 1) if wall else round(completed / cap, 1),
        "start_latency": latency_ms([r["start"] - r["posted"] for r in records if r["start"] and r["posted"]]),
        "peak_running": peak_running,
        "worker_processes": worker_processes,
        "worker_rss_mb_idle": round(rss_idle, 1),
        "worker_rss_mb_peak": round(rss_peak, 1),
        # the worker's whole RSS at peak per execution in flight (what capacity costs: a process per
        # slot with prefork), and only its growth during the run
        "worker_rss_kb_per_inflight": round(rss_peak * 1024 / peak_running, 1) if peak_running else None,
        "worker_rss_growth_kb_per_inflight": round((rss_peak - rss_idle) * 1024 / peak_running, 1)
        if peak_running
        else None,
        "machine_busy_pct": round(cpu["machine_busy_pct"], 1),
        "cpu_seconds_by_process": {k: round(v, 2) for k, v in cpu["cpu_seconds"].items()},
    }


def _cancel_leftovers(conn, version_id) -> int:
    """What the cap cut off: cancelled, so that no worker runs it later (a claim needs `queued`; the
    running ones lose their fenced writes and stop)."""
    cursor = conn.execute(
        "UPDATE executions_execution SET state = 'cancelled', cancel_requested = true, failure_reason = 'cancelled',"
        " finished_at = now(), updated_at = now(), lease_owner = '', lease_expires_at = NULL"
        " WHERE agent_version_id = %s AND NOT (state = ANY(%s))",
        (version_id, list(TERMINAL)),
    )
    return cursor.rowcount


PREFORK_MAX = 32  # a prefork child is a whole process (~100 MB): 500 of them would exhaust the machine


def worker_pool() -> str:
    """The pool `ops/processes.py` starts the worker with (--pool / -P, else the app's setting)."""

    from config.celery import app
    from ops import processes

    command, _ = processes.worker(1)
    for index, arg in enumerate(command):
        if arg in ("--pool", "-P") and index + 1 < len(command):
            return command[index + 1]
        if arg.startswith("--pool="):
            return arg.split("=", 1)[1]
    return app.conf.worker_pool or "prefork"


def run(platform, fixture: dict, executions: int, concurrency: int, cap: float) -> dict:
    """Stops the platform's worker, runs the phase on a worker of `concurrency`, stops that one."""
    from config.celery import app

    pool, requested = worker_pool(), concurrency
    if pool == "prefork" and concurrency > PREFORK_MAX:
        concurrency = PREFORK_MAX
        log(
            f"  the worker pool is prefork: --concurrency {requested} would fork {requested} processes;"
            f" using {concurrency}"
        )
    platform.stop_worker()
    platform.start_worker(concurrency)
    log(f"  worker with --concurrency {concurrency} ready; starting {executions} executions")
    try:
        result = asyncio.run(_run(platform, fixture, executions, cap))
    finally:
        platform.stop_worker(grace=5)
        app.control.purge()  # the task messages of cancelled leftovers
    return {"worker_pool": pool, "worker_concurrency": concurrency, "worker_concurrency_requested": requested, **result}
