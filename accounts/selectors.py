"""Reads of the accounts app."""

import hmac

from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import PUBLIC_ID_LENGTH, hash_key

# last_used_at is refreshed at most this often per key, so authentication is a single read.
LAST_USED_RESOLUTION_SECONDS = 60


def find_active_key(raw_key: str) -> ApiKey | None:
    """The active key that `raw_key` is, found by its public prefix and checked in constant time."""
    if not raw_key or not raw_key.startswith(("wak_", "eak_")) or len(raw_key) <= PUBLIC_ID_LENGTH:
        return None
    api_key = (
        ApiKey.objects.select_related("workspace", "principal")
        .filter(prefix=raw_key[:PUBLIC_ID_LENGTH], revoked_at__isnull=True)
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, hash_key(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key



def model_config_for(workspace, requested) -> dict | None:
    """The model an execution runs on: the requested alias (it must be on the workspace's
    allow-list), else the workspace's default alias, else None (the responder's own model).

    `requested` is an alias name, or {"alias": name} (the skills API documents an object)."""
    from accounts.models import ModelAlias
    from config.errors import ApiError

    if isinstance(requested, dict):
        requested = requested.get("alias")
    if requested is not None and (not isinstance(requested, str) or not requested):
        raise ApiError(400, "invalid_model", 'model must be an alias name or {"alias": "<name>"}.', field="model")
    if requested:
        alias = ModelAlias.objects.filter(workspace=workspace, alias=requested, allowed=True).first()
        if alias is None:
            raise ApiError(422, "model_not_allowed",
                           f"The model alias {requested!r} is not on this space's allow-list.",
                           field="model", alias=requested)
        return alias.config()
    if workspace.default_model_alias:
        alias = ModelAlias.objects.filter(workspace=workspace, alias=workspace.default_model_alias).first()
        if alias is not None:
            return alias.config()
    return None
