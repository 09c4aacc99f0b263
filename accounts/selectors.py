"""Reads of the accounts app (the API-key lookup of authentication is api_keys.py)."""

from accounts.models import ModelAlias
from core.errors import ApiError


def model_config_for(workspace, requested) -> dict | None:
    """The model an execution runs on: the requested alias (it must be on the workspace's
    allow-list), else the workspace's default alias, else None (the responder's own model).

    `requested` is an alias name, or {"alias": name} (the skills API documents an object)."""
    if isinstance(requested, dict):
        requested = requested.get("alias")
    if requested is not None and (not isinstance(requested, str) or not requested):
        raise ApiError(400, "invalid_model", 'model must be an alias name or {"alias": "<name>"}.', field="model")
    if requested:
        alias = ModelAlias.objects.filter(workspace=workspace, alias=requested, allowed=True).first()
        if alias is None:
            raise ApiError(
                422,
                "model_not_allowed",
                f"The model alias {requested!r} is not on this space's allow-list.",
                field="model",
                alias=requested,
            )
        return alias.config()
    if workspace.default_model_alias:
        alias = ModelAlias.objects.filter(workspace=workspace, alias=workspace.default_model_alias).first()
        if alias is not None:
            return alias.config()
    return None
