"""The API process's CPU time per request: a loop of `POST /agents/{id}/execute` of a no-op agent.

Starts a real uvicorn API and a Celery worker like run_bench.py, sends `--requests` sync executes
(`--concurrency` clients at once) of a one-node agent on the built-in model (reply "ok", no delay),
and reads the uvicorn process's user + system CPU time from /proc before and after (Linux only).
With `--py-spy FILE` it also records a py-spy profile of the API (only the thread holding the GIL,
so CPU rather than waits; py-spy installed separately, not a dependency).

Usage: `.venv/bin/python bench/api_cpu.py --requests 500 --concurrency 4 [--py-spy /tmp/api.svg]`.
"""

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from django.core.management import call_command  # noqa: E402
from run_bench import Agent, create_tenant, httpx, percentile, publish_agent_version, start_processes  # noqa: E402


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process, all its threads."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--py-spy", default="", help="record a py-spy profile of the API into this file (.txt: collapsed stacks)"
    )
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)

    call_command("migrate", interactive=False, verbosity=0)
    tenant = create_tenant(f"bench-{uuid.uuid4().hex[:6]}")
    agent = Agent.objects.create(workspace=tenant.workspace, name="no-op")
    publish_agent_version(
        agent, {"nodes": [{"id": "n", "type": "ai", "model": {"provider": "builtin", "reply": "ok"}}]}
    )
    headers = {"X-API-Key": tenant.end_user_key.raw_key}
    url = f"http://127.0.0.1:{args.port}/agents/{agent.id}/execute"

    children = start_processes(args.port, args.worker_concurrency)
    api_pid = children[0].pid
    spy = None
    try:
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=args.concurrency + 2)) as client:

            def one(_):
                started = time.perf_counter()
                response = client.post(url, headers=headers, json={"message": "ping"})
                assert response.status_code == 200 and response.json()["data"]["status"] == "completed", response.text
                return time.perf_counter() - started

            for _ in range(20):
                one(None)
            if args.py_spy:
                spy = subprocess.Popen(
                    [
                        os.path.join(os.path.dirname(sys.executable), "py-spy"),
                        "record",
                        "-o",
                        args.py_spy,
                        "--pid",
                        str(api_pid),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--gil",
                        "--format",
                        "raw" if args.py_spy.endswith(".txt") else "flamegraph",
                    ]
                )
                time.sleep(1)
            idle_before = cpu_seconds(api_pid)
            time.sleep(3)
            idle = sum(cpu_seconds(api_pid)) - sum(idle_before)
            cpu_before, started = cpu_seconds(api_pid), time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                latencies = list(pool.map(one, range(args.requests)))
            elapsed = time.perf_counter() - started
            user, system = (after - before for after, before in zip(cpu_seconds(api_pid), cpu_before))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        for process in children:
            process.send_signal(signal.SIGTERM)
        for process in children:
            process.wait(20)

    print(
        f"{args.requests} requests, {args.concurrency} concurrent: "
        f"API CPU {(user + system) / args.requests * 1000:.2f} ms/request "
        f"(user {user / args.requests * 1000:.2f}, system {system / args.requests * 1000:.2f}; "
        f"idle: {idle / 3 * 1000:.0f} ms/s), "
        f"latency p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms, "
        f"mean {statistics.mean(latencies) * 1000:.1f} ms, {args.requests / elapsed:.1f} req/s"
    )


if __name__ == "__main__":
    main()
