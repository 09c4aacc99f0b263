"""End-to-end benchmark of a no-op execution, side by side with a bare Celery task round trip.

Both run in the same process tree, on the same Redis broker and the same worker fleet:
- execution: POST /agents/{id}/execute/stream of a one-node agent on the built-in model with a
  one-word reply and no delay, timed until its `final` SSE event arrives (row insert, start event,
  dispatch, claim, lease, node events, checkpoint, completion, pub/sub relay, SSE);
- baseline: `workers.tasks.noop_roundtrip` sent with Celery, timed until it answers on a Redis list.
Latency is measured one request at a time (p50/p99); throughput with CONCURRENCY clients at once.

Usage: `make bench` (or `.venv/bin/python bench/run_bench.py --requests 200 --concurrency 8`).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config import local_services, processes  # noqa: E402

if local_services.uses_local_services():
    os.environ.update(local_services.ensure_started())

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from httpx_sse import connect_sse  # noqa: E402

from accounts.services import create_tenant  # noqa: E402
from agents.models import Agent  # noqa: E402
from agents.services import publish_agent_version  # noqa: E402
from config.celery import app as celery_app  # noqa: E402


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(name, latencies, throughput):
    return {
        "name": name,
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "throughput_per_s": round(throughput, 1),
    }


def start_processes(port, concurrency):
    env = {**os.environ, "DATABASE_URL": settings.DATABASE_URL, "REDIS_URL": settings.REDIS_URL}
    api_command, api_env = processes.api("127.0.0.1", port, "--log-level", "warning")
    worker_command, worker_env = processes.worker(concurrency, settings.CELERY_TASK_DEFAULT_QUEUE,
                                                  "--without-mingle", "--without-gossip")
    api = subprocess.Popen(api_command, cwd=REPO, env={**env, **api_env}, start_new_session=True)
    worker = subprocess.Popen(worker_command + ["--loglevel", "WARNING"], cwd=REPO, env={**env, **worker_env},
                              start_new_session=True)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    time.sleep(3)  # let the worker connect
    return [api, worker]


def run_execution(client, url, headers):
    started = time.perf_counter()
    with connect_sse(client, "POST", url, headers=headers, json={"message": "ping"}) as source:
        for sse in source.iter_sse():
            if json.loads(sse.data)["type"] in ("final", "error"):
                assert json.loads(sse.data)["type"] == "final", sse.data
                return time.perf_counter() - started
    raise RuntimeError("stream ended without final")


def run_celery_task(broker):
    reply_key = f"bench:{uuid.uuid4()}"
    started = time.perf_counter()
    celery_app.send_task("workers.tasks.noop_roundtrip", args=[reply_key])
    assert broker.blpop(reply_key, timeout=30) is not None
    return time.perf_counter() - started


def measure(name, one_call, requests, concurrency, warmup=10):
    for _ in range(warmup):
        one_call()
    sequential = [one_call() for _ in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: one_call(), range(requests)))
    throughput = requests / (time.perf_counter() - started)
    return summary(name, sequential, throughput)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    tenant = create_tenant(f"bench-{uuid.uuid4().hex[:6]}")
    agent = Agent.objects.create(workspace=tenant.workspace, name="no-op")
    publish_agent_version(agent, {"nodes": [{"id": "n", "type": "ai", "model": {"provider": "builtin", "reply": "ok"}}]})
    headers = {"X-API-Key": tenant.end_user_key.raw_key}
    url = f"http://127.0.0.1:{args.port}/agents/{agent.id}/execute/stream"

    children = start_processes(args.port, args.worker_concurrency)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    try:
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=args.concurrency + 2)) as client:
            results = [
                measure("bare Celery task round trip", lambda: run_celery_task(broker), args.requests, args.concurrency),
                measure("no-op execution, POST -> final SSE event", lambda: run_execution(client, url, headers),
                        args.requests, args.concurrency),
            ]
    finally:
        for process in children:
            process.send_signal(signal.SIGTERM)
        for process in children:
            process.wait(20)

    print(f"\n{'':44} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>8}")
    for row in results:
        print(f"{row['name']:44} {row['p50_ms']:8} {row['p99_ms']:8} {row['mean_ms']:8} {row['throughput_per_s']:8}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
