"""Helpers shared by the tests: auth headers, workflows, execute calls, a real SSE client.

`api` arguments are where requests go: the base URL of the live server (`live`), the in-process
API (`api` fixture, an httpx.Client), or Django's test `client`.
"""

import json
import os
import re
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import jsonschema
import pytest
from httpx_sse import connect_sse

ROOT = Path(__file__).resolve().parent.parent
# Read by config/settings.py but not for a deployment (docker-compose.yml, deploy/kubernetes/): the
# embedded servers' and local disk's folders (a deployment uses PostgreSQL, Redis and S3),
# collectstatic's target (ServeStatic serves from the apps), the tests' Redis, the demo model's pacing.
NOT_FOR_DEPLOYMENT = {"LOCAL_DATA_DIR", "MEDIA_ROOT", "STATIC_ROOT", "TEST_REDIS_URL", "BUILTIN_MODEL_CHUNK_DELAY_MS"}


def settings_variables() -> set[str]:
    """Every environment variable config/settings.py reads (through its env_* helpers or os.environ):
    what a deployment must give each platform process (tests/test_compose.py, tests/test_kubernetes.py)."""
    source = (ROOT / "config" / "settings.py").read_text()
    pattern = r'(?:env_int|env_bool|env_float|os\.environ\.get|os\.environ\.setdefault)\(\s*"([A-Z][A-Z0-9_]*)"|os\.environ\["([A-Z][A-Z0-9_]*)"\]'
    found = {a or b for a, b in re.findall(pattern, source)}
    assert len(found) > 40, found  # the parser still finds them
    return found


WORDS_20 = " ".join(f"word{i:02d}" for i in range(20))

# A skill on the built-in model that answers "done" at once (one string input, `topic`).
ANSWERING_SKILL_MANIFEST = {
    "inputs_schema": {"type": "object", "properties": {"topic": {"type": "string"}}},
    "instructions": "Answer.",
    "tools": [],
    "limits": {"max_iterations": 2},
    "model": {"provider": "builtin", "script": [{"text": "done"}]},
}


def builtin_workflow(**model_options) -> dict:
    return {"nodes": [{"id": "answer", "type": "ai", "model": {"provider": "builtin", **model_options}}]}


def auth(new_tenant, kind: str = "end_user") -> dict:
    key = new_tenant.end_user_key if kind == "end_user" else new_tenant.workspace_key
    return {"X-API-Key": key.raw_key, "X-Workspace-Id": f"workspace:{new_tenant.workspace.id}"}


@dataclass
class Received:
    id: str
    data: dict
    at: float


def read_stream(
    method: str, url: str, headers: dict, json_body=None, stop=None, timeout: float = 60, client=None
) -> list[Received]:
    """Read an SSE response with httpx-sse until it ends, or until stop(events) is true.

    `url` is absolute, or relative to `client` (the in-process API)."""
    events: list[Received] = []
    with httpx.Client(timeout=timeout) if client is None else nullcontext(client) as http:
        with connect_sse(http, method, url, headers=headers, json=json_body) as source:
            assert source.response.status_code == 200, source.response.read()
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for sse in source.iter_sse():
                if not sse.data:  # a heartbeat comment: httpx-sse reports its blank line as an event (the last id kept)
                    continue
                events.append(Received(id=sse.id, data=json.loads(sse.data), at=time.monotonic()))
                if stop and stop(events):
                    break
    return events


def stream(api, method: str, path: str, headers: dict, json_body=None, **kwargs) -> list[Received]:
    """`read_stream` of `path` on the live server (a base URL) or the in-process API."""
    if isinstance(api, httpx.Client):
        return read_stream(method, path, headers, json_body, client=api, **kwargs)
    return read_stream(method, f"{api}{path}", headers, json_body, **kwargs)


def stream_agent(api, agent, new_tenant, message: str = "hi", **kwargs) -> list[Received]:
    return stream(api, "POST", f"/agents/{agent.id}/execute/stream", auth(new_tenant), {"message": message}, **kwargs)


def post(api, path: str, body=None, headers: dict | None = None, timeout: float = 60):
    """POST a JSON body (a dict, or a str sent as it is) to the live server, the in-process API or Django's test client."""
    data = body if isinstance(body, str) else json.dumps(body)
    json_headers = {"Content-Type": "application/json", **(headers or {})}
    if isinstance(api, str):
        return httpx.post(f"{api}{path}", content=data, headers=json_headers, timeout=timeout)
    if isinstance(api, httpx.Client):
        return api.post(path, content=data, headers=json_headers)
    return api.post(path, data=data, content_type="application/json", headers=headers or {})


def execute(
    api, agent, new_tenant=None, message: str = "hi", *, route="execute", headers=None, body=None, timeout=60, **fields
):
    """POST /agents/{id}/<route> with `{"message": message, **fields}` (or exactly `body`), as the
    tenant's end user and/or with `headers`; returns the response."""
    headers = {**(auth(new_tenant) if new_tenant else {}), **(headers or {})}
    payload = {"message": message, **fields} if body is None else body
    return post(api, f"/agents/{agent.id}/{route}", payload, headers, timeout)


def data_of(response) -> dict:
    """The `data` of a successful response."""
    assert response.status_code in (200, 201, 202), response.content
    return response.json()["data"]


def execution_uuid(public_id: str) -> str:
    return public_id.removeprefix("execution:")


def wait_for(predicate, timeout: float = 30, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def _nullable_as_null(node):
    """OpenAPI 3.0's `nullable: true` in JSON Schema terms (`null` among the types, or the values)."""
    if isinstance(node, list):
        return [_nullable_as_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_as_null(value) for key, value in node.items()}
    if node.pop("nullable", False):
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
        if "type" in node:
            node["type"] = [node["type"], "null"]
    return node


def event_validator(document: dict) -> jsonschema.Draft4Validator:
    """A validator of an SSE frame's data against the document's ExecutionEvent (a oneOf of the event
    types' components, resolved in the whole document)."""
    return jsonschema.Draft4Validator(_nullable_as_null({**document, "$ref": "#/components/schemas/ExecutionEvent"}))


class CuttingProxy:
    """A TCP proxy to a live server that cuts connections, as a network would: its first `cuts`
    connections after `after_bytes` bytes of the answer (mid-frame, most likely), and, whenever the
    test calls `cut()`, every connection open at that moment. Other bytes pass through."""

    def __init__(self, target: str, after_bytes: int | None = None, cuts: int = 0):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.after_bytes, self.cuts = after_bytes, cuts
        self.connections = 0
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                downstream, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.after_bytes if self.connections <= self.cuts else None
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open.update((downstream, upstream))
            threading.Thread(target=self._pump, args=(downstream, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, limit), daemon=True).start()

    def _pump(self, source, sink, limit):
        sent = 0
        try:
            while chunk := source.recv(65536):
                if limit is not None and sent + len(chunk) >= limit:
                    sink.sendall(chunk[: max(limit - sent, 0)])
                    break
                sink.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        self._drop(source, sink)

    def _drop(self, *sockets):
        for s in sockets:
            with self.lock:
                self.open.discard(s)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self) -> int:
        """Cut every connection open now (both ends); returns how many client connections that was."""
        with self.lock:
            sockets = list(self.open)
        self._drop(*sockets)
        return len(sockets) // 2

    def close(self):
        self.server.close()


def missing_tool(require_flag: str, reason: str) -> NoReturn:
    """A tool a test needs is not on this machine: skip, or fail where CI installs it and sets
    `require_flag` to 1 (.ci/run), so that there a missing install step cannot pass as a skip."""
    if os.environ.get(require_flag) == "1":
        pytest.fail(f"{require_flag}=1 but {reason}")
    pytest.skip(reason)
