"""The interface every model provider implements: a stream of chunks, then usage."""

from dataclasses import dataclass, field
from typing import Iterator, Protocol


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ModelChunk:
    """One piece of a model's streamed answer: text, reasoning, a tool call, or the usage."""

    kind: str  # "text" | "reasoning" | "tool_call" | "usage"
    text: str = ""
    tool_call: dict = field(default_factory=dict)
    usage: Usage | None = None


class ModelProvider(Protocol):
    name: str

    def stream(self, messages: list[dict], tools: list[dict] | None = None) -> Iterator[ModelChunk]:
        """Yield chunks as they arrive; the last one has kind "usage"."""
