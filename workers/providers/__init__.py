"""Model providers behind one interface; see base.py."""

from workers.providers.base import ModelChunk, ModelProvider, Usage
from workers.providers.builtin import BuiltinModel


def get_provider(model_config: dict) -> ModelProvider:
    """The provider a node's `model` block names; only the built-in one exists so far."""
    provider = (model_config or {}).get("provider", "builtin")
    if provider == "builtin":
        return BuiltinModel(model_config or {})
    raise ValueError(f"unknown model provider {provider!r}")


__all__ = ["ModelChunk", "ModelProvider", "Usage", "get_provider"]
