"""The drill's workload: what clients do, from outside, through the public API only (the api's
published port, and S3's public address for presigned URLs): sync executes, SSE streams read to
their end (resumed with Last-Event-ID whenever the connection is cut), batches, skill executions
with an uploaded file and their artifact downloaded, executes with an attachment.

Clients behave as documented: a connection that fails or a 503 (with its Retry-After) is retried;
a stream that breaks is resumed from the last event received. Every HTTP answer is recorded, so the
drill can check that no 5xx but the documented 503s came back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.production import seed

TERMINAL = {"final", "error", "batch_completed"}
RETRY_FOR = 180.0  # a request is retried this long at most (the longest fault lasts about 30 s)


@dataclass
class Answer:
    at: float
    method: str
    path: str
    status: int
    retry_after: str | None


@dataclass
class Stream:
    """One execution's stream as a client saw it: every frame, across reconnections."""

    execution_id: str
    kind: str
    seqs: list[int] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    reconnections: int = 0

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] in TERMINAL


class Outside:
    """A client of the deployment: its published API, S3's public address."""

    def __init__(self, base_url: str, headers: dict):
        self.base_url, self.headers = base_url, headers
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=httpx.Timeout(60, connect=5))

    def _record(self, method: str, path: str, response: httpx.Response) -> None:
        with self.lock:
            self.answers.append(
                Answer(time.time(), method, path, response.status_code, response.headers.get("Retry-After"))
            )

    def request(self, method: str, path: str, retry: bool = True, **kwargs) -> httpx.Response:
        """One API call, retried over connection failures and 503s (after their Retry-After)."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        headers = {**self.headers, **kwargs.pop("headers", {})}
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                response = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError:
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            self._record(method, path, response)
            if response.status_code == 503 and retry and time.monotonic() < deadline:
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 5))
                continue
            return response

    def stream(self, method: str, path: str, kind: str, body: dict | None = None) -> Stream:
        """POST a streaming start (or GET an events route) and read to the terminal event; on a cut,
        resume with GET <events route> and Last-Event-ID."""
        record: Stream | None = None
        events_path = None
        deadline = time.monotonic() + RETRY_FOR
        while time.monotonic() < deadline:
            if record is None:
                request = (method, path, body)
            else:
                request = ("GET", events_path, None)
            headers = {**self.headers, "Accept": "text/event-stream"}
            if record is not None and record.seqs:
                headers["Last-Event-ID"] = str(record.seqs[-1])
            try:
                with self.http.stream(
                    request[0], f"{self.base_url}{request[1]}", headers=headers, json=request[2]
                ) as response:
                    self._record(request[0], request[1], response)
                    if response.status_code == 204 and record is not None:
                        return record  # the stream is over: nothing after Last-Event-ID
                    if response.status_code == 503:
                        time.sleep(min(float(response.headers.get("Retry-After", "1")), 5))
                        continue
                    assert response.status_code == 200, (request, response.status_code, response.read())
                    for frame in _frames(response):
                        data = json.loads(frame["data"])
                        if record is None:
                            record = Stream(data["execution_id"], kind)
                            events_path = self._events_path(kind, record.execution_id)
                        record.seqs.append(int(frame["id"]))
                        record.events.append(data)
                        if data["type"] in TERMINAL:
                            return record
            except (httpx.TransportError, httpx.StreamError):
                pass
            if record is not None:
                record.reconnections += 1
            time.sleep(0.3)
        raise AssertionError(f"{kind} stream {record and record.execution_id} did not end within {RETRY_FOR} s")

    def _events_path(self, kind: str, execution_id: str) -> str:
        if kind == "skill":
            space = self.headers["X-Workspace-Id"].removeprefix("workspace:")
            return f"/v1/spaces/{space}/skills/executions/{execution_id}/events"
        return f"/executions/{execution_id}/events"


def _frames(response: httpx.Response):
    """SSE frames (`id`, `data`) of a streamed answer; comments (heartbeats) skipped."""
    frame: dict = {}
    for line in response.iter_lines():
        if not line:
            if "data" in frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


@dataclass
class Results:
    streams: list[Stream] = field(default_factory=list)
    sync: list[dict] = field(default_factory=list)
    artifacts: dict[str, bytes | None] = field(default_factory=dict)  # skill execution -> its report (None: it failed)
    failures: list[str] = field(default_factory=list)


class Workload:
    """Client threads, each looping over its kind of request until `stop()`."""

    MIX = ("stream",) * 5 + ("sync", "skill", "batch", "attachment")

    def __init__(self, outside: Outside, ids: dict):
        self.outside, self.ids = outside, ids
        self.space = ids["workspace_id"]
        self.results = Results()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def prepare(self) -> None:
        """The skill's material in the caller's personal collection (POST /v1/files/)."""
        response = self.outside.request(
            "POST", "/v1/files/", files={"file": (seed.MATERIAL, MATERIAL_TEXT.encode(), "text/markdown")}
        )
        assert response.status_code == 201, response.text

    def start(self) -> None:
        for number, kind in enumerate(self.MIX):
            thread = threading.Thread(target=self._loop, args=(kind,), name=f"client-{kind}-{number}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 240) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"clients still running after {timeout} s: {alive}"

    def _loop(self, kind: str) -> None:
        while not self.stopping.is_set():
            try:
                getattr(self, f"_{kind}")()
            except Exception as exc:  # recorded and reported by the drill's assertions
                with self.lock:
                    self.results.failures.append(f"{kind}: {exc!r}"[:2000])
                time.sleep(1)

    def _keep(self, stream: Stream) -> Stream:
        with self.lock:
            self.results.streams.append(stream)
        return stream

    def _stream(self) -> None:
        path = f"/agents/{self.ids['paid_agent_id']}/execute/stream"
        self._keep(self.outside.stream("POST", path, "agent", {"message": "hi"}))

    def _sync(self) -> None:
        response = self.outside.request("POST", f"/agents/{self.ids['paid_agent_id']}/execute", json={"message": "hi"})
        assert response.status_code in (200, 202), (response.status_code, response.text)
        with self.lock:
            self.results.sync.append(response.json()["data"])

    def _batch(self) -> None:
        items = [{"key": f"item-{n}", "message": f"item {n}"} for n in range(4)]
        path = f"/agents/{self.ids['free_agent_id']}/execute/batch"
        self._keep(self.outside.stream("POST", path, "batch", {"items": items}))

    def _attachment(self) -> None:
        upload = self.outside.request(
            "POST", "/attachments/upload", files={"file": ("notes.txt", b"plain words for the agent", "text/plain")}
        )
        assert upload.status_code == 201, upload.text
        stored = upload.json()["data"]
        attachment = {"filename": "notes.txt", "content_type": "text/plain", "storage_key": stored["storage_key"]}
        response = self.outside.request(
            "POST",
            f"/agents/{self.ids['free_agent_id']}/execute",
            json={"message": "read the notes", "attachments": [attachment]},
        )
        assert response.status_code in (200, 202), (response.status_code, response.text)
        with self.lock:
            self.results.sync.append(response.json()["data"])

    def _skill(self) -> None:
        start = self.outside.request(
            "POST",
            f"/v1/spaces/{self.space}/skills/{seed.SKILL_SLUG}/executions",
            json={"inputs": {"topic": "drill"}, "file_source_ids": [seed.MATERIAL]},
        )
        assert start.status_code == 201, start.text
        execution_id = start.json()["data"]["id"]
        stream = self._keep(
            self.outside.stream("GET", f"/v1/spaces/{self.space}/skills/executions/{execution_id}/events", "skill")
        )
        results = [e for e in stream.events if e["type"] == "tool_result"]
        assert not results or results[0]["result"]["content"] == MATERIAL_TEXT, results[:1]  # the uploaded file
        detail = self.outside.request("GET", f"/v1/spaces/{self.space}/skills/executions/{execution_id}")
        assert detail.status_code == 200, detail.text
        data = detail.json()["data"]
        report = None
        if data["state"] == "completed":
            [artifact] = data["artifacts"]
            report = self.download(artifact["download_url"])
        with self.lock:
            self.results.artifacts[execution_id] = report

    def download(self, download_url: str) -> bytes:
        """The artifact's link (the API: a key of the tenant, then a redirect to a presigned S3 URL),
        fetched as a client outside the deployment does."""
        redirect = self.outside.request("GET", download_url, follow_redirects=False)
        assert redirect.status_code == 302, (redirect.status_code, redirect.text)
        presigned = redirect.headers["Location"]
        response = httpx.get(presigned, timeout=30)  # no API key: the signature is the authorisation
        assert response.status_code == 200, (presigned, response.status_code, response.text[:500])
        return response.content


MATERIAL_TEXT = "Sea otters hold hands while they sleep.\n"
