"""Helpers shared by the tests: auth headers, workflows, a real SSE client."""

import json
import time
from dataclasses import dataclass

import httpx
from httpx_sse import connect_sse

WORDS_20 = " ".join(f"word{i:02d}" for i in range(20))


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


def read_stream(method: str, url: str, headers: dict, json_body=None, stop=None, timeout: float = 60) -> list[Received]:
    """Read an SSE response with httpx-sse until it ends, or until stop(events) is true."""
    events: list[Received] = []
    with httpx.Client(timeout=timeout) as client:
        with connect_sse(client, method, url, headers=headers, json=json_body) as source:
            assert source.response.status_code == 200, source.response.read()
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for sse in source.iter_sse():
                events.append(Received(id=sse.id, data=json.loads(sse.data), at=time.monotonic()))
                if stop and stop(events):
                    break
    return events


def stream_agent(base_url: str, agent, new_tenant, message: str = "hi", **kwargs) -> list[Received]:
    return read_stream(
        "POST", f"{base_url}/agents/{agent.id}/execute/stream", auth(new_tenant), {"message": message}, **kwargs
    )


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
