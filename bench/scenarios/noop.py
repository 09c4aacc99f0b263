"""Rows 2 and 3: the no-op execution through the SYNC endpoint, `POST /agents/{id}/execute` (JSON
answer once the execution completed): sequential latency, and closed-loop throughput with N clients
(each keeps one keep-alive connection and sends its next request when the previous one answered)."""

import asyncio
import time

from bench.harness import HOST, cpu_summary, latency_ms
from bench.loadclient import Connection, one_at_a_time
from bench.procstat import CpuMeter


class NoopFailed(Exception):
    pass


async def execute_once(connection: Connection, agent_id: str, key: str) -> float:
    started = time.perf_counter()
    response = await connection.request("POST", f"/agents/{agent_id}/execute", {"X-API-Key": key}, {"message": "ping"})
    elapsed = time.perf_counter() - started
    if response.status != 200 or response.json()["data"]["status"] != "completed":
        raise NoopFailed(f"HTTP {response.status}: {response.body[:300]!r}")
    return elapsed


def sequential(port: int, agent_id: str, key: str, requests: int, warmup: int = 10) -> dict:
    async def call(connection):
        return await execute_once(connection, agent_id, key)

    return latency_ms(asyncio.run(one_at_a_time(HOST, port, call, requests, warmup)))


async def _closed_loop(port: int, agent_id: str, key: str, clients: int, seconds: float):
    deadline = time.perf_counter() + seconds
    latencies, errors = [], []

    async def client():
        connection = Connection(HOST, port)
        try:
            while time.perf_counter() < deadline:
                try:
                    latencies.append(await asyncio.wait_for(execute_once(connection, agent_id, key), 60))
                except (TimeoutError, NoopFailed, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(repr(exc)[:200])
                    connection.close()
                    await asyncio.sleep(0.1)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


def closed_loop(port: int, agent_id: str, key: str, clients: int, seconds: float, process_kinds: dict) -> dict:
    meter = CpuMeter(process_kinds).start()
    started = time.perf_counter()
    latencies, errors = asyncio.run(_closed_loop(port, agent_id, key, clients, seconds))
    elapsed = time.perf_counter() - started
    cpu = meter.stop()
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "done": len(latencies),
        "failed": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "per_s": round(len(latencies) / elapsed, 1),
        **latency_ms(latencies),
        **cpu_summary(cpu, len(latencies)),
    }
