"""OpenAI-compatible chat completions, streamed, on the official `openai` SDK.

One provider for every server that speaks the Chat Completions API: OpenAI, Azure OpenAI's v1
endpoint and gateways, vLLM, Ollama (`base_url` http://localhost:11434/v1), the llama.cpp server.

Options (a node's `model` block or a model alias's config): `model`, `base_url` (default: OpenAI),
`api_key_env` (the NAME of the environment variable holding the key, default OPENAI_API_KEY; with a
`base_url` and the variable unset a placeholder key is sent, as local servers need none),
`timeout_seconds` (60: connecting, and the longest silence between two chunks), `max_retries` (2),
`temperature`, `max_tokens` (`max_completion_tokens` for OpenAI's reasoning models),
`response_format` (passed as is) or `output_schema` (a JSON Schema: structured output), and
`extra_body` (server-specific fields, e.g. vLLM's sampling options).

Streamed tool calls arrive as argument fragments keyed by index; each call is yielded once, whole,
when the choice finishes. Arguments that are not a JSON object are yielded as {"_raw": "<text>"} so
the tool's schema check reports them to the model (and they are sent back verbatim next turn).
Reasoning comes as `delta.reasoning_content` (vLLM, DeepSeek, llama.cpp) or `delta.reasoning`
(Ollama, newer vLLM, OpenRouter). The usage comes in the last chunk (`stream_options.include_usage`);
`input_tokens` is `prompt_tokens`, which includes the cached tokens OpenAI reports apart.
"""

import json
from collections.abc import Iterator

import openai

from workers.providers.base import (
    ModelChunk,
    ProviderError,
    SdkModel,
    Usage,
    classify_status,
    error_details,
    parse_arguments,
    redact,
    retry_after_seconds,
)


def _arguments_json(arguments) -> str:
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict) and set(arguments) == {"_raw"}:  # what the model sent, unparsed
        return arguments["_raw"]
    return json.dumps(arguments if arguments is not None else {})


def to_openai_messages(messages: list[dict]) -> list[dict]:
    """The runtime's messages in the Chat Completions shape."""
    converted = []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role == "tool":
            converted.append({"role": "tool", "tool_call_id": message.get("tool_call_id", ""), "content": content})
        elif role == "assistant" and message.get("tool_calls"):
            converted.append(
                {
                    "role": "assistant",
                    "content": content or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": _arguments_json(call.get("arguments"))},
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        else:
            converted.append({"role": role, "content": content})
    return converted


def to_openai_tools(tools: list[dict] | None) -> list[dict] | None:
    if not tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


class OpenAICompatibleModel(SdkModel):
    name = "openai"
    label = "OpenAI-compatible provider"
    key_env_default = "OPENAI_API_KEY"
    sdk_error = openai.APIError
    client = staticmethod(openai.OpenAI)

    def request(self, messages: list[dict], tools: list[dict] | None) -> dict:
        """The keyword arguments of chat.completions.create."""
        options = self.options
        request = {
            "model": options.get("model", ""),
            "messages": to_openai_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            request["tools"] = to_openai_tools(tools)
        for name in ("temperature", "max_tokens", "max_completion_tokens", "extra_body"):
            if options.get(name) is not None:
                request[name] = options[name]
        if options.get("response_format"):
            request["response_format"] = options["response_format"]
        elif options.get("output_schema"):
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": options["output_schema"]},
            }
        return request

    def create(self, client, request: dict):
        return client.chat.completions.create(**request)

    def _chunks(self, response) -> Iterator[ModelChunk]:
        calls: dict[int, dict] = {}  # index -> {"id", "name", "arguments": the fragments so far}
        usage = Usage()

        def finished_calls():
            for index in sorted(calls):
                call = calls[index]
                yield ModelChunk(
                    kind="tool_call",
                    tool_call={"id": call["id"], "name": call["name"], "arguments": parse_arguments(call["arguments"])},
                )
            calls.clear()

        for chunk in response:
            if chunk.usage is not None:
                details = chunk.usage.prompt_tokens_details
                usage = Usage(
                    input_tokens=chunk.usage.prompt_tokens or 0,
                    output_tokens=chunk.usage.completion_tokens or 0,
                    cached_input_tokens=(details.cached_tokens or 0) if details else 0,
                )
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is not None:
                    reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
                    if isinstance(reasoning, str) and reasoning:
                        yield ModelChunk(kind="reasoning", text=reasoning)
                    if delta.content:
                        yield ModelChunk(kind="text", text=delta.content)
                    for fragment in delta.tool_calls or []:
                        index = fragment.index if fragment.index is not None else len(calls)
                        call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = fragment.id or call["id"]
                        if fragment.function is not None:
                            call["name"] = call["name"] or fragment.function.name or ""
                            call["arguments"] += fragment.function.arguments or ""
                if choice.finish_reason:
                    yield from finished_calls()
        yield from finished_calls()  # a server that never sent finish_reason
        yield ModelChunk(kind="usage", usage=usage)

    def _error(self, exc: openai.APIError, key: str, key_env: str) -> ProviderError:
        provider = "OpenAI-compatible provider"
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(
                "provider_timeout",
                f"{provider}: no answer within {self.options.get('timeout_seconds', 60)} s.",
                retryable=True,
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = redact(str(exc.__cause__ or ""), key, 200)
            return ProviderError(
                "provider_unavailable",
                f"{provider}: connection failed" + (f" ({cause})." if cause else "."),
                retryable=True,
            )
        code, message = error_details(exc.body)
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        headers = exc.response.headers if isinstance(exc, openai.APIStatusError) else None
        return classify_status(
            provider, status, code, redact(message, key), key_env=key_env, retry_after=retry_after_seconds(headers)
        )
