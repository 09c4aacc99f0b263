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

