"""Row 9: fairness between workspaces. One workspace queues a burst (`--fairness-burst`, 10,000 by
default) of no-op executions while the worker is stopped, through the API (`Prefer:
respond-async`, 32 clients); then the worker starts and, while it drains the burst, another
workspace runs sequential sync no-ops. Reported: the burst's size and drain rate, the other
workspace's latency (p50, p95, max) during the drain, and how many of the burst were still queued
when its last request ended: without fairness that latency would be the whole drain time
(executions/fairness.py).

What the phase leaves queued is cancelled in the database and its messages purged.
"""

import asyncio
import time

from bench.harness import HOST, connect, latency_ms, log
from bench.loadclient import Connection
from bench.scenarios.noop import execute_once

BURST_CLIENTS = 32


async def _burst(port: int, agent_id: str, key: str, count: int) -> int:
    queue = iter(range(count))
    accepted = 0

    async def client():
        nonlocal accepted
        connection = await Connection(HOST, port).open()
        try:
            for _ in queue:
                response = await connection.request(
                    "POST",
                    f"/agents/{agent_id}/execute",
                    {"X-API-Key": key, "Prefer": "respond-async"},
                    {"message": "ping"},
                )
                accepted += response.status == 202
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(BURST_CLIENTS)))
    return accepted


async def _other(port: int, agent_id: str, key: str, requests: int) -> list[float]:
    connection = await Connection(HOST, port).open()
    try:
        return [await execute_once(connection, agent_id, key) for _ in range(requests)]
    finally:
        connection.close()


def _queued(conn, version_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM executions_execution WHERE agent_version_id = %s AND state = 'queued'", (version_id,)
    ).fetchone()[0]


def run(platform, fixture: dict, other: dict, burst: int, requests: int = 20) -> dict:
    from config.celery import app

    version_id = fixture["agent_versions"]["noop"]
    platform.stop_worker()
    started = time.perf_counter()
    accepted = asyncio.run(_burst(platform.port, fixture["agents"]["noop"], fixture["key"], burst))
    log(f"fairness: {accepted} queued in {time.perf_counter() - started:.0f} s")
    with connect() as conn:
        platform.start_worker()
        drain_started = time.perf_counter()
        latencies = asyncio.run(_other(platform.port, other["agents"]["noop"], other["key"], requests))
        elapsed = time.perf_counter() - drain_started
        left = _queued(conn, version_id)
        result = {
            "burst": accepted,
            "other_workspace_ms": latency_ms(latencies),
            "burst_still_queued_after": left,
            "burst_drained_per_s": round((accepted - left) / elapsed, 1),
        }
        conn.execute(
            "UPDATE executions_execution SET state = 'cancelled', cancel_requested = true,"
            " failure_reason = 'cancelled', finished_at = now(), updated_at = now()"
            " WHERE agent_version_id = %s AND state = 'queued'",
            (version_id,),
        )
    app.control.purge()  # the messages of what was cancelled
    return result
