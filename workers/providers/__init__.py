"""Model providers behind one interface; see base.py."""

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


__all__ = ["FAILURE_REASONS", "ModelChunk", "ModelProvider", "ProviderError", "Usage", "get_provider"]
