"""Rows 1 and 3 (baseline): a bare Celery round trip, `send_task("workers.tasks.noop_roundtrip")`
until the task answers on a Redis list (BLPOP), on the same broker and worker as the executions."""

import threading
import time
import uuid

from bench.harness import cpu_summary, latency_ms, redis_client
from bench.procstat import CpuMeter


def roundtrip(broker, timeout: float = 30) -> float | None:
    """Seconds from send_task to the answer; None on timeout."""
    from config.celery import app

    reply_key = f"bench:{uuid.uuid4()}"
    started = time.perf_counter()
    app.send_task("workers.tasks.noop_roundtrip", args=[reply_key])
    if broker.blpop(reply_key, timeout=timeout) is None:
        return None
    return time.perf_counter() - started


def sequential(requests: int, warmup: int = 10) -> dict:
    broker = redis_client()
    for _ in range(warmup):
        roundtrip(broker)
    return latency_ms([roundtrip(broker) for _ in range(requests)])


def closed_loop(clients: int, seconds: float, process_kinds: dict) -> dict:
    """`clients` threads, each sending the next task as soon as its previous one answered."""
    deadline = time.perf_counter() + seconds
    latencies, failures = [], [0]

    def client():
        broker = redis_client()
        while time.perf_counter() < deadline:
            elapsed = roundtrip(broker)
            if elapsed is None:
                failures[0] += 1
            else:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    meter = CpuMeter(process_kinds).start()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    elapsed = time.perf_counter() - started
    cpu = meter.stop()
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "done": len(latencies),
        "failed": failures[0],
        "per_s": round(len(latencies) / elapsed, 1),
        **latency_ms(latencies),
        **cpu_summary(cpu, len(latencies)),
    }
