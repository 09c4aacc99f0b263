"""Model providers behind one interface (see base.py), and the media generation providers."""

from workers.providers.base import FAILURE_REASONS, ModelChunk, ModelProvider, ProviderError, Usage
from workers.providers.builtin import BuiltinModel

OPENAI_COMPATIBLE = ("openai", "openai_compatible", "azure_openai", "vllm", "ollama")


def get_provider(model_config: dict) -> ModelProvider:
    """The provider a node's `model` block (or a model alias's config) names.

    The SDK modules are imported here, on first use, so the built-in model needs neither (an
    optional heavy import, not a hidden cycle: those modules import only base.py)."""
    provider = (model_config or {}).get("provider", "builtin")
    if provider == "builtin":
        return BuiltinModel(model_config or {})
    if provider in OPENAI_COMPATIBLE:
        from workers.providers.openai_compat import OpenAICompatibleModel

        return OpenAICompatibleModel(model_config)
    if provider == "anthropic":
        from workers.providers.anthropic_provider import AnthropicModel

        return AnthropicModel(model_config)
    raise ValueError(f"unknown model provider {provider!r}")


def get_media_provider(name: str):
    """A `media_generation` node's provider: builtin (workers/media.py) or fal (fal.py)."""
    if name == "builtin":
        from workers.media import BuiltinMediaProvider

        return BuiltinMediaProvider()
    if name == "fal":
        from workers.providers.fal import FalMediaProvider

        return FalMediaProvider()
    raise ValueError(f"Unknown media provider {name!r}.")


__all__ = [
    "FAILURE_REASONS",
    "ModelChunk",
    "ModelProvider",
    "ProviderError",
    "Usage",
    "get_media_provider",
    "get_provider",
]
