"""The interface every model provider implements: a stream of chunks, then usage.

Also what the network providers share: `ProviderError` (a failure the runtime can name and show),
`classify_status` (an HTTP status and the server's error body -> ProviderError), `api_key_from_env`
and `with_retries`, the one retry policy: exponential backoff with jitter, only while nothing has
been yielded yet, because output already streamed to the client cannot be taken back.
"""

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from accounts.model_keys import api_key_env_allowed
from core import json as finite_json

logger = logging.getLogger(__name__)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # of input_tokens, those read from the provider's prompt cache

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ModelChunk:
    """One piece of a model's streamed answer: text, reasoning, a tool call, the usage, or data the
    provider needs back with this answer on the next turn (`provider_data`, kept on the assistant
    message, e.g. Anthropic's signed thinking blocks)."""

    kind: str  # "text" | "reasoning" | "tool_call" | "usage" | "provider_data"
    text: str = ""
    tool_call: dict = field(default_factory=dict)
    usage: Usage | None = None
    provider_data: dict = field(default_factory=dict)


class ModelProvider(Protocol):
    name: str

    def stream(self, messages: list[dict], tools: list[dict] | None = None) -> Iterator[ModelChunk]:
        """Yield chunks as they arrive; the last one has kind "usage"."""


# --- errors ------------------------------------------------------------------------------------

FAILURE_REASONS = (
    "provider_rate_limited",  # 429: retryable
    "provider_error",  # 5xx or an error event in the stream: retryable
    "provider_timeout",  # no answer within timeout_seconds, 408, 504: retryable
    "provider_unavailable",  # connection refused or reset, 503, 529 overloaded: retryable
    "context_length_exceeded",  # the prompt does not fit the model's context: not retryable
    "provider_auth_error",  # 401/403 or no key in the environment: not retryable
    "invalid_request",  # any other 4xx: not retryable
)


class ProviderError(Exception):
    """A model provider failed. `str(error)` is safe to show and store: it never holds an API key.

    `failure_reason` is one of FAILURE_REASONS (the execution's error code); `retryable` says
    whether the same request may succeed later (the provider retries those itself, but only before
    its first chunk); `retry_after` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(
        self,
        failure_reason: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status_code: int | None = None,
    ):
        assert failure_reason in FAILURE_REASONS, failure_reason
        super().__init__(message)
        self.failure_reason = failure_reason
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code


CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context size",  # OpenAI, vLLM, llama.cpp
    "prompt is too long",
    "too many tokens",
    "maximum context",
    "exceed_context_size",  # Anthropic, others
)


def error_details(body) -> tuple[str, str]:
    """(error code or type, message) from an error body of OpenAI ({"message", "type", "code"}),
    Anthropic ({"type": "error", "error": {"type", "message"}}) or a compatible server."""
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        code = inner.get("code") or inner.get("type") or ""
        message = inner.get("message") or ""
        return str(code), message if isinstance(message, str) else str(message)
    return "", body if isinstance(body, str) else ""


def redact(text: str, secret: str | None, limit: int = 500) -> str:
    """The server's message, shortened, without the key (servers may echo it back)."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return text if len(text) <= limit else text[:limit] + "..."


def classify_status(
    provider: str, status: int | None, code: str, message: str, *, retry_after: float | None = None, key_env: str = ""
) -> ProviderError:
    """An HTTP error status (None: an error event inside a 200 stream) -> ProviderError."""
    detail = f"{provider} returned HTTP {status}" if status else f"{provider} sent an error in the stream"
    lowered = f"{code} {message}".lower()
    if status in (401, 403) or code in ("authentication_error", "permission_error", "invalid_api_key"):
        # The server's own text is left out: some echo a part of the key back.
        return ProviderError(
            "provider_auth_error",
            f"{detail}: the API key from the environment variable {key_env or '(none)'} was refused.",
            status_code=status,
        )
    text = f"{detail}: {message}" if message else detail
    if status == 429 or code in ("rate_limit_error", "rate_limit_exceeded", "insufficient_quota"):
        return ProviderError(
            "provider_rate_limited",
            text,
            retryable=code != "insufficient_quota",
            retry_after=retry_after,
            status_code=status,
        )
    if any(marker in lowered for marker in CONTEXT_LENGTH_MARKERS) and (status is None or 400 <= status < 500):
        return ProviderError("context_length_exceeded", text, status_code=status)
    if status in (408, 504) or code == "timeout_error":
        return ProviderError("provider_timeout", text, retryable=True, status_code=status)
    if status in (502, 503, 529) or code == "overloaded_error":
        return ProviderError("provider_unavailable", text, retryable=True, status_code=status)
    if status is not None and 400 <= status < 500:
        return ProviderError("invalid_request", text, status_code=status)
    return ProviderError("provider_error", text, retryable=True, status_code=status)


def retry_after_seconds(headers) -> float | None:
    """The Retry-After header in seconds (`retry-after-ms` first, as OpenAI sends it); dates are ignored."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            return max(0.0, float(headers.get(name)) / scale)
        except (TypeError, ValueError):
            continue
    return None


def api_key_from_env(provider: str, options: dict, default_env: str) -> tuple[str, str]:
    """(key, variable name): the key is read from the environment variable `api_key_env` names, never
    from the options themselves (they are stored in the database and shown in the admin). A local
    server (a `base_url` is set) may need no key: a placeholder is sent then."""
    env = options.get("api_key_env") or default_env
    if env != default_env and not api_key_env_allowed(env):  # saved before the rule or edited in the database
        raise ProviderError(
            "provider_auth_error",
            f"{provider}: api_key_env {env!r} is not an allowed variable (MODEL_API_KEY_ENV_ALLOWED).",
        )
    key = os.environ.get(env, "")
    if not key:
        if options.get("base_url"):
            return "no-key", env
        raise ProviderError(
            "provider_auth_error", f"{provider}: the environment variable {env} holding the API key is not set."
        )
    return key, env


def parse_arguments(raw: str) -> dict:
    """A tool call's arguments; "" is no arguments; anything but a JSON object is kept as {"_raw": raw}
    (`NaN`, `Infinity` and `1e999` too: JSON cannot carry them, core/json.py)."""
    if not raw.strip():
        return {}
    try:
        value = finite_json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


# --- retries -----------------------------------------------------------------------------------

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
RETRY_AFTER_MAX_SECONDS = 20.0


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """0.5 s * 2^attempt (capped) plus up to 25 % jitter; a server's Retry-After wins, up to a cap."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    delay += random.uniform(0, delay / 4)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return delay


def with_retries(
    attempt: Callable[[], Iterator[ModelChunk]],
    max_retries: int,
    provider: str,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[ModelChunk]:
    """Run `attempt()` (a generator raising ProviderError) again on a retryable error, at most
    `max_retries` more times, but only while none of its chunks was yielded: once output reached the
    consumer a retry would stream it twice, so the error is raised. Closing this generator closes
    the running attempt, which closes its upstream response."""
    for number in range(max_retries + 1):
        chunks, yielded = attempt(), False
        try:
            for chunk in chunks:
                yielded = True
                yield chunk
            return
        except ProviderError as exc:
            if yielded or not exc.retryable or number >= max_retries:
                raise
            delay = backoff_seconds(number, exc.retry_after)
            logger.warning(
                "%s: %s (%s); retry %d of %d in %.2f s",
                provider,
                exc.failure_reason,
                exc,
                number + 1,
                max_retries,
                delay,
            )
        finally:
            chunks.close()
        sleep(delay)


# --- providers on an official SDK ----------------------------------------------------------------


class SdkModel:
    """What the SDK-based providers share: the key from the environment, our bounded retries around
    one SDK request per attempt, and the response and the client closed on every exit (a cancelled
    stream releases its connection at once). Subclasses give `request`, `client` (the SDK's client
    class), `create`, `_chunks` (SDK events -> ModelChunk) and `_error` (SDK error -> ProviderError)."""

    name = ""
    label = ""  # the provider in messages
    key_env_default = ""  # the environment variable of the key unless `api_key_env` names another
    sdk_error: type[Exception] = Exception

    def __init__(self, options: dict):
        self.options = options

    def stream(self, messages: list[dict], tools: list[dict] | None = None) -> Iterator[ModelChunk]:
        """A generator: errors (a missing key too) surface while iterating; close() ends the request."""
        key, key_env = api_key_from_env(self.label, self.options, self.key_env_default)
        request = self.request(messages, tools)
        yield from with_retries(
            lambda: self._attempt(request, key, key_env), int(self.options.get("max_retries", 2)), self.name
        )

    def _attempt(self, request: dict, key: str, key_env: str) -> Iterator[ModelChunk]:
        """One request; the SDK's own retries are off (ours are in with_retries)."""
        client = self.client(
            api_key=key,
            base_url=self.options.get("base_url") or None,
            timeout=float(self.options.get("timeout_seconds", 60)),
            max_retries=0,
        )
        response = None
        try:
            response = self.create(client, request)
            yield from self._chunks(response)
        except self.sdk_error as exc:
            raise self._error(exc, key, key_env) from None  # the SDK's text may hold what the server echoed
        finally:
            if response is not None:
                response.close()
            client.close()
