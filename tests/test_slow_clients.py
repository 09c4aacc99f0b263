"""Slow clients hold no connection past a deadline (slowloris): a request's headers within
REQUEST_HEADER_TIMEOUT_SECONDS (ops/http_protocol.py, on the raw connection), its body within
REQUEST_BODY_TIMEOUT_SECONDS (api/http/request_limits.py), each a JSON 408 `request_timeout`; an
idle kept-alive connection is closed after uvicorn's --timeout-keep-alive (ops/processes.py).
A uvicorn of its own, with deadlines of 2 s."""

import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from ops import processes
from tests.conftest import _stop, start_api_server

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE = 2.0


@pytest.fixture(scope="module")
def strict_server(services_env, tmp_path_factory):
    env = {"REQUEST_HEADER_TIMEOUT_SECONDS": str(DEADLINE), "REQUEST_BODY_TIMEOUT_SECONDS": str(DEADLINE)}
    process, base_url = start_api_server(services_env, tmp_path_factory.mktemp("strict") / "api.log", **env)
    yield base_url
    _stop(process)


def _connect(base_url: str) -> socket.socket:
    address = urlsplit(base_url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def _trickle(sock: socket.socket, data: bytes, started: float, limit: float) -> bytes:
    """Send `data` a byte a second until the server answers or closes; what it answered."""
    answer = b""
    sock.settimeout(1.0)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # closed by the server
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = None  # still reading: the next byte
        except OSError:
            break
        if chunk is not None:
            answer += chunk
            break  # answered (or closed): sending more would only reset the connection
        assert time.monotonic() - started < limit, "the server still reads the slow client"
    sock.settimeout(5)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return answer


def _error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_headers_sent_a_byte_a_second_are_cut_at_the_deadline(strict_server):
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 30 + b"\r\n\r\n"
    started = time.monotonic()
    with _connect(strict_server) as sock:
        answer = _trickle(sock, request, started, limit=DEADLINE + 3)
    assert DEADLINE - 0.5 <= time.monotonic() - started <= DEADLINE + 3
    status, error = _error(answer)
    assert status == 408 and error["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(strict_server):
    started = time.monotonic()
    with _connect(strict_server) as sock:
        answer = sock.recv(65536)  # blocks until the server answers or closes
    assert time.monotonic() - started <= DEADLINE + 3
    assert _error(answer)[0] == 408


def test_a_body_sent_a_byte_a_second_is_cut_at_its_deadline(strict_server):
    body = b'{"message": "' + b"x" * 40 + b'"}'
    head = (
        f"POST /agents/00000000-0000-4000-8000-000000000009/execute HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with _connect(strict_server) as sock:
        sock.sendall(head)  # the headers at once: only the body is slow
        answer = _trickle(sock, body, started, limit=DEADLINE + 3)
    status, error = _error(answer)
    assert status == 408 and error["code"] == "request_timeout" and "body" in error["message"]


def test_a_prompt_client_is_not_cut_and_keeps_its_connection_until_the_keep_alive_ends(strict_server):
    with _connect(strict_server) as sock:
        for _ in range(2):  # two requests on one connection, each well within the deadlines
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = b""
            while not answer.endswith(b"0\r\n\r\n"):  # the end of the chunked answer
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.5)
        started = time.monotonic()
        sock.settimeout(processes.KEEP_ALIVE_SECONDS + 5)
        assert sock.recv(65536) == b""  # closed by the server, idle
        assert time.monotonic() - started <= processes.KEEP_ALIVE_SECONDS + 1
