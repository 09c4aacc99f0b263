"""The OpenAI-compatible and Anthropic providers through the real SDKs against a local HTTP server.

The server replays each API's streaming wire format as recorded from the real services (SSE over a
chunked HTTP/1.1 response): OpenAI's `chat.completion.chunk` lines ending with `data: [DONE]`,
Anthropic's named events. No database is needed.
"""

import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.providers import ProviderError, base, get_provider

KEY_ENV = "SKILLRUN_TEST_MODEL_API_KEY"
KEY = "sk-test-S3CRET-7f1c2a9b4d6e8f0a1b2c3d4e5f6a7b8c"


# --- the fake API server -----------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted response: a status with a JSON body, or a 200 stream of SSE frames."""

    status: int = 200
    frames: list[str] = field(default_factory=list)
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    interval: float = 0.0  # seconds between frames
    drop_after: int | None = None  # close the connection after this many frames, without ending


class FakeServer:
    def __init__(self):
        self.replies: list[Reply] = []
        self.requests: list[dict] = []  # {"path", "headers", "body"}
        self.disconnected = threading.Event()
        self.frames_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # a client that went away between requests
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                server.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                reply = server.replies.pop(0) if server.replies else Reply(500, body={"error": {"message": "no reply"}})
                if reply.status != 200:
                    payload = json.dumps(reply.body or {}).encode()
                    self.send_response(reply.status)
                    for name, value in {"content-type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                try:
                    for index, frame in enumerate(reply.frames):
                        if reply.drop_after is not None and index == reply.drop_after:
                            self.close_connection = True
                            self.wfile.flush()
                            self.connection.shutdown(2)
                            return
                        data = frame.encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        server.frames_sent += 1
                        if reply.interval:
                            time.sleep(reply.interval)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected.set()  # the client went away: what a cancel must cause
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(base, "BACKOFF_BASE_SECONDS", 0.01)
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def log_records(caplog):
    """Every record at DEBUG from our code, the SDKs and their HTTP libraries."""
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "workers"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def collect(stream) -> list:
    return list(stream)


def texts(chunks, kind="text") -> str:
    return "".join(chunk.text for chunk in chunks if chunk.kind == kind)


def assert_no_key(exc: BaseException | None, caplog) -> None:
    if exc is not None:
        assert KEY not in str(exc)
        assert KEY not in "".join(traceback.format_exception(exc))
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.name
        assert KEY not in (record.exc_text or "")
    assert KEY[8:20] not in caplog.text  # not even a part of it


# --- OpenAI wire format ------------------------------------------------------------------------


def oa_chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None, choices=True) -> str:
    chunk = {
        "id": "chatcmpl-AbC123",
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}] if choices else [],
        "usage": usage,
    }
    return f"data: {json.dumps(chunk)}\n\n"


OA_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 9,
    "total_tokens": 129,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OA_DONE = "data: [DONE]\n\n"


def oa_text_frames(words: list[str], usage=OA_USAGE) -> list[str]:
    frames = [oa_chunk({"role": "assistant", "content": "", "refusal": None})]
    frames += [oa_chunk({"content": word}) for word in words]
    return frames + [oa_chunk(finish="stop"), oa_chunk(usage=usage, choices=False), OA_DONE]


def oa_error(status: int, message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def openai_model(server: FakeServer, **options):
    return get_provider(
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": server.url + "/v1",
            "api_key_env": KEY_ENV,
            "timeout_seconds": 5,
            **options,
        }
    )


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def test_openai_text_and_usage(server, log_records):
    server.replies.append(Reply(frames=oa_text_frames(["Sunny", " and", " 21", " °C."])))
    chunks = collect(openai_model(server).stream(MESSAGES))
    assert texts(chunks) == "Sunny and 21 °C."
    assert [c.kind for c in chunks].count("usage") == 1 and chunks[-1].kind == "usage"
    usage = chunks[-1].usage
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (120, 9, 64)
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert_no_key(None, log_records)


def test_openai_tool_call_arguments_split_across_chunks(server):
    first = {"index": 0, "id": "call_Wq8", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    second = {"index": 1, "id": "call_Zx1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    frames = [
        oa_chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
        oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        oa_chunk({"tool_calls": [second]}),
        oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Par'}}]}),
        oa_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"city": "Oslo"}'}}]}),
        oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'is"}'}}]}),
        oa_chunk(finish="tool_calls"),
        oa_chunk(usage=OA_USAGE, choices=False),
        OA_DONE,
    ]
    server.replies.append(Reply(frames=frames))
    chunks = collect(openai_model(server).stream(MESSAGES, TOOLS))
    calls = [c.tool_call for c in chunks if c.kind == "tool_call"]
    assert calls == [
        {"id": "call_Wq8", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_Zx1", "name": "get_weather", "arguments": {"city": "Oslo"}},
    ]
    assert chunks[-1].kind == "usage"


def test_openai_invalid_tool_arguments_are_kept_raw(server):
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": '},
    }
    server.replies.append(Reply(frames=[oa_chunk({"tool_calls": [call]}), oa_chunk(finish="tool_calls"), OA_DONE]))
    chunks = collect(openai_model(server).stream(MESSAGES, TOOLS))
    assert chunks[0].tool_call["arguments"] == {"_raw": '{"city": '}
    assert chunks[-1].kind == "usage" and chunks[-1].usage.input_tokens == 0  # a server that sent no usage


@pytest.mark.parametrize("raw", ['{"city": NaN}', '{"city": -Infinity}', '{"temperature": 1e999}'])
def test_openai_tool_arguments_json_cannot_carry_are_kept_raw(server, raw):
    """NaN and infinities: Python's json reads them, PostgreSQL's jsonb refuses them (core/json.py)."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": raw}}
    server.replies.append(Reply(frames=[oa_chunk({"tool_calls": [call]}), oa_chunk(finish="tool_calls"), OA_DONE]))
    chunks = collect(openai_model(server).stream(MESSAGES, TOOLS))
    assert chunks[0].tool_call["arguments"] == {"_raw": raw}


def test_openai_reasoning_content(server):
    frames = [
        oa_chunk({"role": "assistant", "content": "", "reasoning_content": "Think"}),
        oa_chunk({"reasoning_content": "ing."}),
        oa_chunk({"reasoning": " More."}),
        oa_chunk({"content": "Done."}),
        oa_chunk(finish="stop"),
        oa_chunk(usage=OA_USAGE, choices=False),
        OA_DONE,
    ]
    server.replies.append(Reply(frames=frames))
    chunks = collect(openai_model(server).stream(MESSAGES))
    assert texts(chunks, "reasoning") == "Thinking. More."
    assert texts(chunks) == "Done."


def test_openai_request_shapes(server):
    server.replies.append(Reply(frames=oa_text_frames(["ok"])))
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "name": "get_weather",
            "content": '{"outcome": "success", "result": "sunny"}',
        },
    ]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    collect(openai_model(server, temperature=0.2, max_tokens=300, output_schema=schema).stream(messages, TOOLS))
    body = server.requests[0]["body"]
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2 and body["max_tokens"] == 300
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert body["tools"] == [{"type": "function", "function": TOOLS[0]}]
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"outcome": "success", "result": "sunny"}'},
    ]


def test_openai_error_mid_stream_keeps_text_and_does_not_retry(server):
    frames = oa_text_frames(["Hello", " there"])[:3] + [
        "data: "
        + json.dumps(oa_error(500, "The server had an error while processing your request.", "server_error", None))
        + "\n\n"
    ]
    server.replies.append(Reply(frames=frames))
    server.replies.append(Reply(frames=oa_text_frames(["never"])))
    received = []
    with pytest.raises(ProviderError) as caught:
        for chunk in openai_model(server).stream(MESSAGES):
            received.append(chunk)
    assert texts(received) == "Hello there"
    assert caught.value.failure_reason == "provider_error"
    assert "server had an error" in str(caught.value)
    assert len(server.requests) == 1


def test_openai_connection_dropped_mid_stream(server):
    server.replies.append(Reply(frames=oa_text_frames(["One", " two", " three"]), drop_after=3))
    received = []
    with pytest.raises(ProviderError) as caught:
        for chunk in openai_model(server).stream(MESSAGES):
            received.append(chunk)
    assert texts(received) == "One two"
    assert caught.value.failure_reason == "provider_unavailable" and caught.value.retryable
    assert len(server.requests) == 1


def test_openai_429_then_success_is_retried_once(server, log_records):
    server.replies.append(
        Reply(
            429,
            body=oa_error(
                429, "Rate limit reached for gpt-4o-mini on requests per min.", "requests", "rate_limit_exceeded"
            ),
            headers={"retry-after-ms": "300"},
        )
    )
    server.replies.append(Reply(frames=oa_text_frames(["After", " waiting"])))
    started = time.monotonic()
    chunks = collect(openai_model(server).stream(MESSAGES))
    assert texts(chunks) == "After waiting"
    assert len(server.requests) == 2
    assert time.monotonic() - started >= 0.3  # the server's retry-after-ms was honoured
    assert any("provider_rate_limited" in r.getMessage() for r in log_records.records)


def test_openai_retries_are_bounded(server):
    for _ in range(3):
        server.replies.append(
            Reply(503, body=oa_error(503, "The engine is currently overloaded.", "server_error", None))
        )
    with pytest.raises(ProviderError) as caught:
        collect(openai_model(server, max_retries=1).stream(MESSAGES))
    assert caught.value.failure_reason == "provider_unavailable" and caught.value.retryable
    assert len(server.requests) == 2


def test_openai_401_is_an_auth_error_without_retry_or_key(server, log_records):
    # The worst case: a server that echoes the whole key back.
    server.replies.append(
        Reply(
            401, body=oa_error(401, f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key")
        )
    )
    with pytest.raises(ProviderError) as caught:
        collect(openai_model(server).stream(MESSAGES))
    assert caught.value.failure_reason == "provider_auth_error" and not caught.value.retryable
    assert KEY_ENV in str(caught.value)
    assert len(server.requests) == 1
    assert_no_key(caught.value, log_records)


def test_openai_context_length(server, log_records):
    message = (
        "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "131072 tokens. Please reduce the length of the messages."
    )
    server.replies.append(Reply(400, body=oa_error(400, message, "invalid_request_error", "context_length_exceeded")))
    with pytest.raises(ProviderError) as caught:
        collect(openai_model(server).stream(MESSAGES))
    assert caught.value.failure_reason == "context_length_exceeded" and not caught.value.retryable
    assert "maximum context length" in str(caught.value)
    assert len(server.requests) == 1
    assert_no_key(caught.value, log_records)


def test_openai_other_400_is_invalid_request(server):
    server.replies.append(
        Reply(400, body=oa_error(400, "Invalid value for 'temperature'.", "invalid_request_error", None))
    )
    with pytest.raises(ProviderError) as caught:
        collect(openai_model(server).stream(MESSAGES))
    assert caught.value.failure_reason == "invalid_request" and not caught.value.retryable


def test_openai_connection_refused(server):
    url = server.url
    server.close()
    model = get_provider(
        {"provider": "vllm", "model": "m", "base_url": url + "/v1", "api_key_env": KEY_ENV, "max_retries": 0}
    )
    with pytest.raises(ProviderError) as caught:
        collect(model.stream(MESSAGES))
    assert caught.value.failure_reason == "provider_unavailable"
    server.httpd = type("Closed", (), {"shutdown": lambda self: None, "server_close": lambda self: None})()


def test_openai_cancel_closes_the_upstream_connection(server):
    frames = oa_text_frames([f" w{i}" for i in range(100)])
    server.replies.append(Reply(frames=frames, interval=0.1))  # 10 s of streaming
    stream = openai_model(server).stream(MESSAGES)
    first, second = next(stream), next(stream)
    assert first.kind == second.kind == "text"
    closed_at = time.monotonic()
    stream.close()
    assert server.disconnected.wait(2), "the server kept streaming after the consumer closed the stream"
    assert time.monotonic() - closed_at < 2
    assert server.frames_sent < 40


def test_missing_key_variable_is_an_auth_error(monkeypatch):
    monkeypatch.delenv("SKILLRUN_UNSET_API_KEY", raising=False)
    model = get_provider({"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "SKILLRUN_UNSET_API_KEY"})
    stream = model.stream(MESSAGES)  # a generator: nothing happens until it is iterated
    with pytest.raises(ProviderError) as caught:
        next(stream)
    assert caught.value.failure_reason == "provider_auth_error"
    assert "SKILLRUN_UNSET_API_KEY" in str(caught.value)


def test_a_key_in_the_options_is_never_used(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.replies.append(Reply(frames=oa_text_frames(["ok"])))
    model = get_provider(
        {"provider": "ollama", "model": "llama3.2", "base_url": server.url + "/v1", "api_key": "sk-from-options"}
    )
    assert texts(collect(model.stream(MESSAGES))) == "ok"
    assert "sk-from-options" not in server.requests[0]["headers"].get("authorization", "")


# --- Anthropic wire format ---------------------------------------------------------------------


def an_event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


AN_START_USAGE = {
    "input_tokens": 30,
    "cache_creation_input_tokens": 20,
    "cache_read_input_tokens": 100,
    "output_tokens": 1,
    "service_tier": "standard",
}


def an_start(usage=AN_START_USAGE) -> str:
    return an_event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-6",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
    )


def an_block_start(index: int, block: dict) -> str:
    return an_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def an_delta(index: int, delta: dict) -> str:
    return an_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def an_block_stop(index: int) -> str:
    return an_event("content_block_stop", {"type": "content_block_stop", "index": index})


def an_end(stop_reason="end_turn", output_tokens=15) -> list[str]:
    return [
        an_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        an_event("message_stop", {"type": "message_stop"}),
    ]


PING = an_event("ping", {"type": "ping"})


def an_text_frames(words: list[str]) -> list[str]:
    return [
        an_start(),
        an_block_start(0, {"type": "text", "text": ""}),
        PING,
        *[an_delta(0, {"type": "text_delta", "text": word}) for word in words],
        an_block_stop(0),
        *an_end(),
    ]


def an_error(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def anthropic_model(server: FakeServer, **options):
    return get_provider(
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-6",
            "base_url": server.url,
            "api_key_env": KEY_ENV,
            "timeout_seconds": 5,
            **options,
        }
    )


def test_anthropic_text_thinking_and_usage(server, log_records):
    frames = [
        an_start(),
        an_block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        an_delta(0, {"type": "thinking_delta", "thinking": "The user wants"}),
        an_delta(0, {"type": "thinking_delta", "thinking": " a greeting."}),
        an_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pk"}),
        an_block_stop(0),
        an_block_start(1, {"type": "text", "text": ""}),
        PING,
        an_delta(1, {"type": "text_delta", "text": "Hello"}),
        an_delta(1, {"type": "text_delta", "text": "!"}),
        an_block_stop(1),
        *an_end(output_tokens=42),
    ]
    server.replies.append(Reply(frames=frames))
    chunks = collect(anthropic_model(server, thinking_budget_tokens=2048).stream(MESSAGES))
    assert texts(chunks, "reasoning") == "The user wants a greeting."
    assert texts(chunks) == "Hello!"
    # the signed thinking block comes back for the next turn
    [kept] = [c.provider_data for c in chunks if c.kind == "provider_data"]
    assert kept == {
        "anthropic_thinking": [
            {
                "type": "thinking",
                "thinking": "The user wants a greeting.",
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pk",
            }
        ]
    }
    assert chunks[-1].kind == "usage"
    usage = chunks[-1].usage
    # input = uncached + cache reads + cache writes, as billed; the reads are also reported apart
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (150, 42, 100)
    assert server.requests[0]["path"] == "/v1/messages"
    headers = server.requests[0]["headers"]
    assert headers.get("x-api-key") == KEY or headers.get("authorization") == f"Bearer {KEY}"
    assert_no_key(None, log_records)


def test_anthropic_tool_use_input_split_across_deltas(server):
    frames = [
        an_start(),
        an_block_start(0, {"type": "text", "text": ""}),
        an_delta(0, {"type": "text_delta", "text": "Checking."}),
        an_block_stop(0),
        an_block_start(
            1, {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {}}
        ),
        an_delta(1, {"type": "input_json_delta", "partial_json": ""}),
        an_delta(1, {"type": "input_json_delta", "partial_json": '{"ci'}),
        an_delta(1, {"type": "input_json_delta", "partial_json": 'ty": "Pa'}),
        an_delta(1, {"type": "input_json_delta", "partial_json": 'ris"}'}),
        an_block_stop(1),
        an_block_start(2, {"type": "tool_use", "id": "toolu_02", "name": "current_time", "input": {}}),
        an_block_stop(2),
        *an_end("tool_use"),
    ]
    server.replies.append(Reply(frames=frames))
    chunks = collect(anthropic_model(server).stream(MESSAGES, TOOLS))
    assert texts(chunks) == "Checking."
    assert [c.tool_call for c in chunks if c.kind == "tool_call"] == [
        {"id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "toolu_02", "name": "current_time", "arguments": {}},
    ]
    assert chunks[-1].kind == "usage"


def test_anthropic_request_shapes(server):
    server.replies.append(Reply(frames=an_text_frames(["ok"])))
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "toolu_1", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "toolu_2", "name": "get_weather", "arguments": {"city": "Oslo"}},
            ],
            "provider_data": {
                "anthropic_thinking": [{"type": "thinking", "thinking": "Two cities.", "signature": "sig-1"}]
            },
        },
        {"role": "tool", "tool_call_id": "toolu_1", "name": "get_weather", "content": '{"result": "sunny"}'},
        {"role": "tool", "tool_call_id": "toolu_2", "name": "get_weather", "content": '{"result": "rain"}'},
    ]
    collect(anthropic_model(server, max_tokens=8000, thinking_budget_tokens=4000).stream(messages, TOOLS))
    body = server.requests[0]["body"]
    assert body["model"] == "claude-sonnet-4-6" and body["stream"] is True and body["max_tokens"] == 8000
    assert body["system"] == "You are terse."
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4000}
    assert body["tools"] == [
        {"name": "get_weather", "description": "The weather of a city", "input_schema": TOOLS[0]["parameters"]}
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two cities.", "signature": "sig-1"},  # first, as the API requires
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"result": "sunny"}'},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": '{"result": "rain"}'},
            ],
        },
    ]


def test_anthropic_error_mid_stream_keeps_text_and_does_not_retry(server):
    frames = an_text_frames(["Partial", " answer"])[:5] + [
        an_event("error", an_error("overloaded_error", "Overloaded"))
    ]
    server.replies.append(Reply(frames=frames))
    server.replies.append(Reply(frames=an_text_frames(["never"])))
    received = []
    with pytest.raises(ProviderError) as caught:
        for chunk in anthropic_model(server).stream(MESSAGES):
            received.append(chunk)
    assert texts(received) == "Partial answer"
    assert caught.value.failure_reason == "provider_unavailable"
    assert "Overloaded" in str(caught.value)
    assert len(server.requests) == 1


def test_anthropic_429_then_success_is_retried_once(server):
    server.replies.append(
        Reply(
            429,
            body=an_error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            headers={"retry-after": "0"},
        )
    )
    server.replies.append(Reply(frames=an_text_frames(["Fine", " now"])))
    chunks = collect(anthropic_model(server).stream(MESSAGES))
    assert texts(chunks) == "Fine now"
    assert len(server.requests) == 2


def test_anthropic_529_overloaded_is_retried(server):
    server.replies.append(Reply(529, body=an_error("overloaded_error", "Overloaded")))
    server.replies.append(Reply(frames=an_text_frames(["ok"])))
    assert texts(collect(anthropic_model(server).stream(MESSAGES))) == "ok"
    assert len(server.requests) == 2


def test_anthropic_401_is_an_auth_error_without_retry_or_key(server, log_records):
    server.replies.append(Reply(401, body=an_error("authentication_error", f"invalid x-api-key {KEY}")))
    with pytest.raises(ProviderError) as caught:
        collect(anthropic_model(server).stream(MESSAGES))
    assert caught.value.failure_reason == "provider_auth_error" and not caught.value.retryable
    assert len(server.requests) == 1
    assert_no_key(caught.value, log_records)


def test_anthropic_context_length(server, log_records):
    server.replies.append(
        Reply(400, body=an_error("invalid_request_error", "prompt is too long: 210344 tokens > 200000 maximum"))
    )
    with pytest.raises(ProviderError) as caught:
        collect(anthropic_model(server).stream(MESSAGES))
    assert caught.value.failure_reason == "context_length_exceeded" and not caught.value.retryable
    assert "prompt is too long" in str(caught.value)
    assert len(server.requests) == 1
    assert_no_key(caught.value, log_records)


def test_anthropic_cancel_closes_the_upstream_connection(server):
    words = [f" w{i}" for i in range(100)]
    server.replies.append(Reply(frames=an_text_frames(words), interval=0.1))  # 10 s of streaming
    stream = anthropic_model(server).stream(MESSAGES)
    first, second = next(stream), next(stream)
    assert first.kind == second.kind == "text"
    closed_at = time.monotonic()
    stream.close()
    assert server.disconnected.wait(2), "the server kept streaming after the consumer closed the stream"
    assert time.monotonic() - closed_at < 2
    assert server.frames_sent < 40


# --- shared pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "openai_compatible", "azure_openai", "vllm", "ollama"])
def test_openai_compatible_aliases(name):
    assert get_provider({"provider": name}).name == "openai"


def test_builtin_and_anthropic_are_registered():
    assert get_provider({}).name == "builtin"
    assert get_provider({"provider": "anthropic"}).name == "anthropic"
    with pytest.raises(ValueError):
        get_provider({"provider": "nope"})


def test_backoff_is_exponential_bounded_and_honours_retry_after(monkeypatch):
    monkeypatch.setattr(base, "BACKOFF_BASE_SECONDS", 0.5)
    assert 0.5 <= base.backoff_seconds(0) <= 0.625
    assert 1.0 <= base.backoff_seconds(1) <= 1.25
    assert base.backoff_seconds(30) <= base.BACKOFF_MAX_SECONDS * 1.25
    assert base.backoff_seconds(0, retry_after=5) == 5
    assert base.backoff_seconds(0, retry_after=3600) == base.RETRY_AFTER_MAX_SECONDS


def test_no_retry_after_a_chunk_was_yielded():
    attempts = []

    def attempt():
        attempts.append(1)
        yield base.ModelChunk(kind="text", text="hi")
        raise ProviderError("provider_error", "boom", retryable=True)

    chunks = []
    with pytest.raises(ProviderError):
        for chunk in base.with_retries(attempt, 5, "test", sleep=lambda s: None):
            chunks.append(chunk)
    assert len(attempts) == 1 and [c.text for c in chunks] == ["hi"]
