"""The built-in deterministic model: no network, the demo's and the tests' model.

It streams its answer word by word with a configurable delay, follows a script of turns (text and
tool calls) when one is given, and reports token usage (one token per whitespace-separated word).
The same input always gives the same output, so a retried step streams the same text.

Node `model` options: {"provider": "builtin", "chunk_delay_ms": 100, "script": [{"reasoning": "...",
"text": "...", "tool_calls": [{"name": ..., "arguments": {...}}]}, ...], "reply": "fixed answer",
"fail": "message", "fail_on": "text"}. A script is followed turn by turn (the n-th answer of the
conversation plays the n-th entry); "fail" fails half way through the text; "fail_on" fails when
the user's message contains that text (a batch with mixed outcomes). Script text and tool call
arguments may use templates (workers/templates.py): `{{prompt}}` is the first user message (parsed
when it is JSON, as a skill's inputs are) and `{{last_tool_result}}` the last tool result
(`{"outcome", "result"}`), so a script can answer with what its tools returned; `{{messages}}`
is everything the model received (roles and contents), for tests of the context.
"""

import hashlib
import json
import time
from collections.abc import Iterator

from django.conf import settings

from core import json as finite_json
from workers.providers.base import ModelChunk, Usage
from workers.templates import render

DEFAULT_REPLY = (
    "This answer comes from the built-in deterministic model, which runs without any network. "
    "It streams one word at a time so that you can watch the execution arrive live over "
    "Server-Sent Events. You said: {message}"
)


class BuiltinModelError(Exception):
    pass


def _parsed(text):
    """JSON text as its value (a message `NaN` stays text: JSON cannot carry it, core/json.py)."""
    try:
        return finite_json.loads(text)
    except (TypeError, ValueError):
        return text


def _script_context(messages: list[dict]) -> dict:
    first_user = next((m.get("content") for m in messages if m.get("role") == "user"), "")
    last_tool = next((m.get("content") for m in reversed(messages) if m.get("role") == "tool"), None)
    return {
        "prompt": _parsed(first_user),
        "last_tool_result": _parsed(last_tool),
        "messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages],
    }


class BuiltinModel:
    name = "builtin"

    def __init__(self, options: dict):
        self.options = options
        self.chunk_delay = options.get("chunk_delay_ms", settings.BUILTIN_MODEL_CHUNK_DELAY_MS) / 1000

    def _turn(self, messages: list[dict]) -> dict:
        script = self.options.get("script")
        if script:
            assistant_turns = sum(1 for m in messages if m.get("role") == "assistant")
            return render(script[min(assistant_turns, len(script) - 1)], _script_context(messages))
        last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        return {"text": self.options.get("reply") or DEFAULT_REPLY.format(message=last_user)}

    def stream(self, messages: list[dict], tools: list[dict] | None = None) -> Iterator[ModelChunk]:
        turn = self._turn(messages)
        fail_on = self.options.get("fail_on")
        if fail_on and any(fail_on in str(m.get("content", "")) for m in messages if m.get("role") == "user"):
            raise BuiltinModelError(f"The message contains {fail_on!r}.")
        output_tokens = 0
        if turn.get("reasoning"):
            for index, word in enumerate(turn["reasoning"].split(" ")):
                output_tokens += 1
                yield ModelChunk(kind="reasoning", text=word if index == 0 else " " + word)
        text = turn.get("text")
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)  # a template that was a whole value, e.g. "{{messages}}"
        words = text.split(" ") if text else []
        for index, word in enumerate(words):
            if index and self.chunk_delay:
                time.sleep(self.chunk_delay)
            if self.options.get("fail") and index == len(words) // 2:
                raise BuiltinModelError(self.options["fail"])
            output_tokens += 1
            yield ModelChunk(kind="text", text=word if index == 0 else " " + word)
        for index, call in enumerate(turn.get("tool_calls", [])):
            output_tokens += 1
            call_id = (
                call.get("id")
                or "tc_" + hashlib.sha1(f"{len(messages)}:{index}:{call['name']}".encode()).hexdigest()[:12]
            )
            yield ModelChunk(kind="tool_call", tool_call={**call, "id": call_id})
        input_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        yield ModelChunk(kind="usage", usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens))
