"""Rows 5 and 7: streaming.

- stream latency: `POST /agents/{id}/execute/stream` of a 10-chunk agent, one at a time: time to
  the first SSE event (`start`) and to the last (`final`);
- stream scale (fan-out): N clients follow ONE execution. The execution first waits on a
  `wait_event` node; the clients connect with `GET /executions/{id}/events` and `Last-Event-ID` =
  its last event (so their streams stay open instead of ending at the suspension); once they are
  connected the bench posts the external event and the execution streams 20 chunks. The bench
  itself subscribes to the execution's pub/sub channel and takes the moment each event is
  published there as its publish time; per event, the delay to the last client that received it.
"""

import asyncio
import threading
import time
import uuid
from collections import Counter

from bench.harness import HOST, connect, latency_ms, log, percentile, redis_client
from bench.loadclient import Connection, HttpError, one_at_a_time
from bench.procstat import CpuMeter, tree_rss_mb


async def _stream_once(connection: Connection, agent_id: str, key: str) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = last = None
    events = 0
    async for event in connection.stream(
        "POST", f"/agents/{agent_id}/execute/stream", {"X-API-Key": key}, {"message": "ping"}
    ):
        first = first or event.received
        last = event
        events += 1
    if last is None or last.json()["type"] != "final":
        raise HttpError(f"the stream did not end with final: {last and last.data[:200]!r}")
    return first - started, last.received - started, events


def stream_latency(port: int, agent_id: str, key: str, requests: int, chunk_delay_ms: int, warmup: int = 3) -> dict:
    """`model_ms`: the model's own time (9 delays between 10 words); text is coalesced into one event
    per TEXT_FLUSH_INTERVAL_MS, so `events_per_stream` counts what the client really received."""

    async def call(connection):
        return await _stream_once(connection, agent_id, key)

    times = asyncio.run(one_at_a_time(HOST, port, call, requests, warmup))
    return {
        "first_event": latency_ms([t[0] for t in times]),
        "final_event": latency_ms([t[1] for t in times]),
        "model_ms": 9 * chunk_delay_ms,
        "events_per_stream": round(sum(t[2] for t in times) / len(times), 1),
    }


# --- fan-out --------------------------------------------------------------------------------------


class PublishRecorder(threading.Thread):
    """Subscribes to the execution's channel: seq -> (perf_counter when published, event type)."""

    def __init__(self, channel: str):
        super().__init__(daemon=True)
        self.pubsub = redis_client().pubsub()
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=5)  # the subscribe confirmation
        self.published: dict[int, tuple[float, str]] = {}
        self.stopped = threading.Event()

    def run(self):
        import json

        while not self.stopped.is_set():
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message:
                received = time.perf_counter()
                event = json.loads(message["data"])
                self.published[event["seq"]] = (received, event.get("type"))

    def stop(self):
        self.stopped.set()
        self.join(5)
        self.pubsub.close()


def _redis_clients(channel: str) -> dict:
    client = redis_client()
    info = client.info("clients")
    pubsub_clients = len(client.execute_command("CLIENT LIST TYPE pubsub").splitlines())
    return {
        "connected_clients": info["connected_clients"],
        "pubsub_connections": pubsub_clients,
        "channel_subscribers": client.pubsub_numsub(channel)[0][1],
    }


async def _settle(channel: str, api_pid: int, cap: float) -> None:
    """Wait until the API is idle and the channel's subscriber count stopped moving."""
    client, deadline, previous = redis_client(), time.monotonic() + cap, None
    while time.monotonic() < deadline:
        meter = CpuMeter({"api": (api_pid, True)}).start()
        await asyncio.sleep(0.5)
        api_busy = meter.stop()["cpu_seconds"].get("api", 0) / 0.5
        subscribers = client.pubsub_numsub(channel)[0][1]
        if subscribers == previous and api_busy < 0.2:
            return
        previous = subscribers


async def _fanout(
    platform, fixture: dict, clients: int, connect_parallel: int, connect_cap: float, stream_cap: float
) -> dict:
    port, key, api_pid = platform.port, fixture["key"], platform.api.pid
    control = await Connection(HOST, port).open()
    try:  # the sync endpoint answers at the suspension
        response = await control.request(
            "POST", f"/agents/{fixture['agents']['fanout']}/execute", {"X-API-Key": key}, {"message": "fan-out"}
        )
    finally:
        control.close()
    data = response.json()["data"]
    if data["status"] != "waiting_for_external_event":
        raise RuntimeError(f"the fan-out execution did not wait: {data}")
    execution_id = data["execution_id"]
    execution_uuid = uuid.UUID(execution_id.partition(":")[2])
    with connect() as conn:
        last_seq = conn.execute(
            "SELECT last_event_seq FROM executions_execution WHERE id = %s", (execution_uuid,)
        ).fetchone()[0]
    channel = f"execution-events:{execution_uuid}"
    rss_before, redis_before = tree_rss_mb(api_pid), _redis_clients(channel)

    records = [{"status": None, "error": None, "events": [], "ended": False} for _ in range(clients)]
    gate = asyncio.Semaphore(connect_parallel)
    path = f"/executions/{execution_id}/events"
    headers = {"X-API-Key": key, "Last-Event-ID": str(last_seq)}

    async def client(record):
        connection = Connection(HOST, port)
        head = asyncio.Event()

        def on_head(response):
            record["status"] = response.status
            head.set()

        async def read():
            await connection.open()
            async for event in connection.stream("GET", path, headers, on_head=on_head):
                record["events"].append((event.seq, event.received))
            record["ended"] = True

        # at most connect_parallel connections opening at once; a server slower than 2 s to answer
        # does not hold back the others
        async with gate:
            reader = asyncio.create_task(read())
            waiter = asyncio.create_task(head.wait())
            await asyncio.wait({reader, waiter}, timeout=2, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        try:
            await reader
        except asyncio.CancelledError:
            reader.cancel()
        except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            record["error"] = (
                f"HTTP {record['status']}"
                if record["status"] not in (None, 200)
                else f"{type(exc).__name__}: {str(exc)[:80]}"
            )
        finally:
            connection.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(client(record)) for record in records]
    deadline = started + connect_cap
    while time.perf_counter() < deadline:
        if all(r["status"] is not None or r["error"] is not None for r in records):
            break
        await asyncio.sleep(0.2)
    connect_seconds = time.perf_counter() - started
    await _settle(channel, api_pid, cap=15)
    connected = sum(1 for r in records if r["status"] == 200 and r["error"] is None)
    rss_peak, redis_peak = tree_rss_mb(api_pid), _redis_clients(channel)
    log(f"  {connected}/{clients} streams open after {connect_seconds:.1f} s; posting the event")

    recorder = PublishRecorder(channel)
    recorder.start()
    posted = time.perf_counter()
    post_status = await _post_event(port, execution_id, key)
    if post_status not in (200, 202):  # the API is saturated: resume it directly, to still measure delivery
        log(f"  POST external-event answered {post_status}; resuming the execution in-process instead")
        await asyncio.to_thread(_resume_directly, execution_uuid)
    open_streams = [task for task, record in zip(tasks, records) if record["status"] == 200]
    await asyncio.wait(open_streams or tasks, timeout=stream_cap)
    stream_seconds = time.perf_counter() - posted
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    recorder.stop()
    return {
        "external_event_status": post_status,
        **_fanout_report(
            clients,
            records,
            recorder.published,
            connect_seconds,
            stream_seconds,
            rss_before,
            rss_peak,
            redis_before,
            redis_peak,
        ),
    }


async def _post_event(port: int, execution_id: str, key: str) -> int | str:
    connection = Connection(HOST, port)
    try:
        response = await asyncio.wait_for(
            connection.request(
                "POST", f"/executions/{execution_id}/external-event", {"X-API-Key": key}, {"event": "go", "payload": {}}
            ),
            60,
        )
        return response.status
    except (TimeoutError, OSError, HttpError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}"
    finally:
        connection.close()


def _resume_directly(execution_id: uuid.UUID) -> None:
    from django.db import transaction

    from executions.models import Execution
    from executions.resumes import check_post_external_event

    with transaction.atomic():
        check_post_external_event(Execution.objects.get(id=execution_id), "go", {})


def _fanout_report(
    clients, records, published, connect_seconds, stream_seconds, rss_before, rss_peak, redis_before, redis_peak
) -> dict:
    connected = [r for r in records if r["status"] == 200]
    final_seq = max((seq for seq, (_, type_) in published.items() if type_ == "final"), default=None)
    per_event_last, deliveries = [], []
    for seq, (at, _) in sorted(published.items()):
        received = [t for r in connected for s, t in r["events"] if s == seq]
        if received:
            per_event_last.append(max(received) - at)
            deliveries.extend(t - at for t in received)
    got_final = sum(1 for r in connected if final_seq is not None and any(s == final_seq for s, _ in r["events"]))
    failures = Counter(
        r["error"] or ("no answer in time" if r["status"] is None else f"HTTP {r['status']}")
        for r in records
        if r["error"] is not None or r["status"] != 200
    )
    return {
        "clients": clients,
        "connected": len(connected),
        "failed": clients - len(connected),
        "failures": dict(failures.most_common(5)),
        "received_final": got_final,
        "events_published": len(published),
        "connect_seconds": round(connect_seconds, 1),
        "stream_seconds": round(stream_seconds, 1),
        "api_rss_mb_before": round(rss_before, 1),
        "api_rss_mb_streams": round(rss_peak, 1),
        "api_rss_kb_per_stream": round((rss_peak - rss_before) * 1024 / len(connected), 1) if connected else None,
        "api_rss_kb_per_client": round((rss_peak - rss_before) * 1024 / clients, 1),
        "redis_before": redis_before,
        "redis_with_streams": redis_peak,
        "publish_to_last_client_ms": {
            "p50": round(percentile(per_event_last, 50) * 1000, 1) if per_event_last else None,
            "p99": round(percentile(per_event_last, 99) * 1000, 1) if per_event_last else None,
        },
        "publish_to_each_client_ms": {
            "p50": round(percentile(deliveries, 50) * 1000, 1) if deliveries else None,
            "p99": round(percentile(deliveries, 99) * 1000, 1) if deliveries else None,
        },
    }


def fanout(
    platform, fixture: dict, clients: int, connect_parallel: int = 200, connect_cap: float = 90, stream_cap: float = 60
) -> dict:
    import sys

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the publish recorder thread gets the GIL quickly
    try:
        return asyncio.run(_fanout(platform, fixture, clients, connect_parallel, connect_cap, stream_cap))
    finally:
        sys.setswitchinterval(switch)
