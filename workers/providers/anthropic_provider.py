"""Anthropic's Messages API, streamed, on the official `anthropic` SDK.

Options: `model`, `base_url` (default: Anthropic), `api_key_env` (the NAME of the environment
variable holding the key, default ANTHROPIC_API_KEY), `max_tokens` (4096; required by the API),
`thinking_budget_tokens` (extended thinking, streamed as "reasoning"; must be below max_tokens),
`temperature`, `output_schema` (a JSON Schema: structured output), `timeout_seconds` (60),
`max_retries` (2).

System messages become the separate `system` prompt; an assistant's tool calls become `tool_use`
blocks and tool results `tool_result` blocks of a user message (consecutive results share one, as
the API requires). Tool input arrives as `input_json_delta` fragments per content block; the call is
yielded whole at its `content_block_stop`.

Usage, as Anthropic bills it: `input_tokens` = input_tokens + cache_read_input_tokens +
cache_creation_input_tokens (Anthropic reports the three apart; all were sent to the model),
`cached_input_tokens` = cache_read_input_tokens; the values of `message_delta` (cumulative) win
over those of `message_start`.

Thinking blocks (with their signatures, or redacted) are handed back as a `provider_data` chunk;
the runtime keeps them on the assistant message and they are sent back first in that turn's
content, as the API requires when thinking and tool use are combined.
"""

from collections.abc import Iterator

import anthropic

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

PROVIDER = "Anthropic"


def to_anthropic_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """(system prompt, messages): content as blocks, same-role neighbours merged, no empty text."""
    system, converted = [], []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role == "system":
            if content:
                system.append(content)
            continue
        if role == "tool":
            role, blocks = (
                "user",
                [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""), "content": content}],
            )
        else:
            blocks = [{"type": "text", "text": content}] if content else []
            if role == "assistant":
                blocks = list((message.get("provider_data") or {}).get("anthropic_thinking", [])) + blocks
                blocks += [
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["name"],
                        "input": call.get("arguments") if isinstance(call.get("arguments"), dict) else {},
                    }
                    for call in message.get("tool_calls") or []
                ]
        if not blocks:
            continue
        if converted and converted[-1]["role"] == role:
            converted[-1]["content"].extend(blocks)
        else:
            converted.append({"role": role, "content": blocks})
    return "\n\n".join(system), converted


class AnthropicModel(SdkModel):
    name = "anthropic"
    label = PROVIDER
    key_env_default = "ANTHROPIC_API_KEY"
    sdk_error = anthropic.APIError
    client = staticmethod(anthropic.Anthropic)

    def request(self, messages: list[dict], tools: list[dict] | None) -> dict:
        """The keyword arguments of messages.create."""
        options = self.options
        system, converted = to_anthropic_messages(messages)
        request = {
            "model": options.get("model", ""),
            "max_tokens": int(options.get("max_tokens") or 4096),
            "messages": converted,
            "stream": True,
        }
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [
                {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
                }
                for tool in tools
            ]
        if options.get("thinking_budget_tokens"):
            request["thinking"] = {"type": "enabled", "budget_tokens": int(options["thinking_budget_tokens"])}
        if options.get("temperature") is not None:
            request["temperature"] = options["temperature"]
        if options.get("output_schema"):
            request["output_config"] = {"format": {"type": "json_schema", "schema": options["output_schema"]}}
        return request

    def create(self, client, request: dict):
        return client.messages.create(**request)

    def _chunks(self, response) -> Iterator[ModelChunk]:
        tool_blocks: dict[int, dict] = {}  # content block index -> {"id", "name", "json": fragments}
        thinking: dict[int, dict] = {}  # content block index -> the thinking block, kept for the next turn
        counts = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}

        def count(usage):
            for name in counts:
                value = getattr(usage, name, None)
                if value is not None:
                    counts[name] = value

        for event in response:
            if event.type == "message_start":
                count(event.message.usage)
            elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                tool_blocks[event.index] = {"id": event.content_block.id, "name": event.content_block.name, "json": ""}
            elif event.type == "content_block_start" and event.content_block.type == "thinking":
                thinking[event.index] = {"type": "thinking", "thinking": "", "signature": ""}
            elif event.type == "content_block_start" and event.content_block.type == "redacted_thinking":
                thinking[event.index] = {"type": "redacted_thinking", "data": event.content_block.data}
            elif event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    yield ModelChunk(kind="text", text=delta.text)
                elif delta.type == "thinking_delta" and delta.thinking:
                    if event.index in thinking:
                        thinking[event.index]["thinking"] += delta.thinking
                    yield ModelChunk(kind="reasoning", text=delta.thinking)
                elif delta.type == "signature_delta" and event.index in thinking:
                    thinking[event.index]["signature"] += delta.signature
                elif delta.type == "input_json_delta" and event.index in tool_blocks:
                    tool_blocks[event.index]["json"] += delta.partial_json
            elif event.type == "content_block_stop" and event.index in tool_blocks:
                block = tool_blocks.pop(event.index)
                yield ModelChunk(
                    kind="tool_call",
                    tool_call={"id": block["id"], "name": block["name"], "arguments": parse_arguments(block["json"])},
                )
            elif event.type == "message_delta":
                count(event.usage)
        if thinking:
            yield ModelChunk(
                kind="provider_data", provider_data={"anthropic_thinking": [thinking[i] for i in sorted(thinking)]}
            )
        cache_read, cache_write = counts["cache_read_input_tokens"], counts["cache_creation_input_tokens"]
        yield ModelChunk(
            kind="usage",
            usage=Usage(
                input_tokens=counts["input_tokens"] + cache_read + cache_write,
                output_tokens=counts["output_tokens"],
                cached_input_tokens=cache_read,
            ),
        )

    def _error(self, exc: anthropic.APIError, key: str, key_env: str) -> ProviderError:
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderError(
                "provider_timeout",
                f"{PROVIDER}: no answer within {self.options.get('timeout_seconds', 60)} s.",
                retryable=True,
            )
        if isinstance(exc, anthropic.APIConnectionError):
            cause = redact(str(exc.__cause__ or ""), key, 200)
            return ProviderError(
                "provider_unavailable",
                f"{PROVIDER}: connection failed" + (f" ({cause})." if cause else "."),
                retryable=True,
            )
        code, message = error_details(exc.body)
        status = getattr(exc, "status_code", None)
        headers = exc.response.headers if isinstance(exc, anthropic.APIStatusError) else None
        if status == 200:  # an `error` event inside the stream
            status, headers = None, None
        return classify_status(
            PROVIDER, status, code, redact(message, key), key_env=key_env, retry_after=retry_after_seconds(headers)
        )
