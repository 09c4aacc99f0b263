"""HTTP tools against a real local HTTP server: configured header values (and the URL's query
secrets) never reach an event or an error, and every request carries an Idempotency-Key derived
from the execution and the tool call, the same on every attempt."""

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.models import HttpTool
from executions.models import Execution, ExecutionEvent
from tests.helpers import execution_uuid, stream_agent

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "tok-9f8e7d6c5b4a"
QUERY_SECRET = "q-secret-31337"


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with everything it received (as a careless or hostile receiver would)."""

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.received.append({"path": self.path, "headers": dict(self.headers)})
        echo = {"path": self.path, "headers": dict(self.headers), "body": body, "token_only": TOKEN}
        status = 400 if "/fail" in self.path else 200
        payload = json.dumps(echo).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _tool(tenant, server, path: str, method: str = "POST") -> HttpTool:
    return HttpTool.objects.create(
        workspace=tenant.workspace,
        name="lookup",
        url=f"http://127.0.0.1:{server.server_port}{path}?api_key={QUERY_SECRET}",
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "X-Api-Key": "wxyz", "X-Short": "wxy"},
        allow_private_network=True,  # the receiver is on this machine's loopback
    )


def _everything_recorded(execution_id) -> str:
    execution = Execution.objects.get(id=execution_id)
    events = list(ExecutionEvent.objects.filter(execution_id=execution_id).values_list("data", flat=True))
    return json.dumps([events, execution.outputs, execution.error, execution.checkpoint], default=str)


@pytest.mark.parametrize("path, method", [("/echo", "POST"), ("/echo", "GET"), ("/fail", "POST")])
def test_configured_secrets_never_reach_an_event_an_error_or_a_log(
    live, worker, tenant, workflow_agent, echo_server, path, method
):
    _tool(tenant, echo_server, path, method)
    agent = workflow_agent(
        {"id": "call", "type": "tool", "tool": "lookup", "arguments": {"q": "x"}, "on_error": "continue"}
    )
    events = stream_agent(live, agent, tenant)
    sent = echo_server.received[0]["headers"]
    assert sent["Authorization"] == f"Bearer {TOKEN}"  # the receiver did get them
    result = next(e.data for e in events if e.data["type"] == "tool_result")
    recorded = _everything_recorded(execution_uuid(events[0].data["execution_id"]))
    log = worker.log()
    for secret in (TOKEN, QUERY_SECRET, "wxyz"):
        assert secret not in recorded, f"{secret} leaked"
        assert secret not in log, f"{secret} is in the worker's log"
    assert "[redacted]" in json.dumps(result)
    assert result["outcome"] == ("error" if path == "/fail" else "success")
    if path == "/echo":
        assert result["result"]["headers"]["Authorization"] == "[redacted]"
        assert result["result"]["token_only"] == "[redacted]"  # the credentials without their scheme too
        assert result["result"]["headers"]["X-Short"] == "wxy"  # 3 characters: below MIN_SECRET_CHARS


def _key(execution_id, call_id: str) -> str:
    return hashlib.sha256(f"{execution_id}:{call_id}".encode()).hexdigest()


def test_every_request_carries_an_idempotency_key_of_the_execution_and_the_call(
    live, tenant, workflow_agent, echo_server
):
    _tool(tenant, echo_server, "/echo")
    HttpTool.objects.filter(name="lookup").update(headers={"Idempotency-Key": "configured-one"})
    agent = workflow_agent(
        {"id": "first", "type": "tool", "tool": "lookup", "arguments": {}},
        {
            "id": "answer",
            "type": "ai",
            "tools": ["lookup"],
            "model": {
                "provider": "builtin",
                "script": [
                    {"tool_calls": [{"name": "lookup", "arguments": {}}, {"name": "lookup", "arguments": {"n": 2}}]},
                    {"text": "done"},
                ],
            },
        },
    )
    events = stream_agent(live, agent, tenant)
    execution_id = execution_uuid(events[0].data["execution_id"])
    call_ids = [e.data["tool_call_id"] for e in events if e.data["type"] == "tool_call"]
    assert len(call_ids) == 3 and call_ids[0] == "tc_first"
    keys = [received["headers"]["Idempotency-Key"] for received in echo_server.received]
    assert keys == [_key(execution_id, call_id) for call_id in call_ids]  # ours wins over a configured one
    assert len(set(keys)) == 3

    # another execution of the same workflow: other keys
    events = stream_agent(live, agent, tenant)
    again = execution_uuid(events[0].data["execution_id"])
    assert echo_server.received[3]["headers"]["Idempotency-Key"] == _key(again, "tc_first") != keys[0]


def test_headers_must_be_an_object_of_strings(tenant):
    from django.core.exceptions import ValidationError

    tool = HttpTool(workspace=tenant.workspace, name="t", url="http://127.0.0.1:9/x", headers={"X-N": 1})
    with pytest.raises(ValidationError) as caught:
        tool.full_clean()
    assert "headers" in caught.value.message_dict
    tool.headers = {"X-N": "1"}
    tool.full_clean()


# --- the SSRF guard: the webhooks' rules, an explicit allow per tool, no proxy from the environment --------


def _lookup_agent(workflow_agent):
    script = [{"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}, {"text": "{{last_tool_result}}"}]
    return workflow_agent(
        {"id": "answer", "type": "ai", "tools": ["lookup"], "model": {"provider": "builtin", "script": script}}
    )


def _model_saw(api, tenant, agent) -> dict:
    """The tool result the model got (its next turn answers with it)."""
    events = stream_agent(api, agent, tenant)
    final = next(e.data for e in events if e.data["type"] == "final")
    return json.loads(final["output"]["text"])


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::1]", "10.0.0.1", "169.254.169.254", "[::ffff:127.0.0.1]", "tools.internal.test"],
)
def test_a_private_target_is_refused_as_a_tool_error_the_model_sees(
    api, tenant, workflow_agent, echo_server, monkeypatch, host
):
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(name, port, *args, **kwargs):  # a name of ours that resolves to loopback
        return real_getaddrinfo("127.0.0.1" if name == "tools.internal.test" else name, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    HttpTool.objects.create(workspace=tenant.workspace, name="lookup", url=f"http://{host}:{echo_server.server_port}/x")
    seen = _model_saw(api, tenant, _lookup_agent(workflow_agent))
    assert seen["outcome"] == "error"
    assert seen["result"]["message"].startswith("lookup: blocked_address")
    assert echo_server.received == []  # nothing was sent


def test_the_allow_lets_a_tool_reach_an_internal_host(api, tenant, workflow_agent, echo_server):
    _tool(tenant, echo_server, "/echo")
    seen = _model_saw(api, tenant, _lookup_agent(workflow_agent))
    assert seen["outcome"] == "success" and seen["result"]["path"].startswith("/echo")
    assert len(echo_server.received) == 1


def test_proxies_from_the_environment_are_not_used(api, tenant, workflow_agent, echo_server, monkeypatch):
    """A proxy set in the worker's environment would see every request (and its secrets)."""
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    proxy.received = []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_port}")
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        _tool(tenant, echo_server, "/echo")
        seen = _model_saw(api, tenant, _lookup_agent(workflow_agent))
        assert seen["outcome"] == "success"
        assert len(echo_server.received) == 1 and proxy.received == []
    finally:
        proxy.shutdown()
        proxy.server_close()
