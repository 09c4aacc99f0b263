"""Fal.ai's webhook signature (https://docs.fal.ai, "Webhooks" / "Verifying your webhook").

Fal signs each webhook with an ED25519 key whose public half is in its JWKS (FAL_JWKS_URL; each key's
`x` is the base64url public key). The signed message is four lines joined by "\\n": the headers
X-Fal-Webhook-Request-Id, X-Fal-Webhook-User-Id and X-Fal-Webhook-Timestamp (Unix seconds), and the
SHA-256 hex of the raw body; X-Fal-Webhook-Signature is the signature in hex. A timestamp more than
5 minutes from now is refused (a replayed webhook).

The JWKS is fetched once per FAL_JWKS_CACHE_SECONDS per process; a signature no cached key verifies
makes one early refetch (Fal rotated its keys), at most once a minute, so forged webhooks cannot
make us hammer Fal's endpoint.
"""

import base64
import binascii
import hashlib
import threading
import time

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings

from core.errors import ApiError

TOLERANCE_SECONDS = 300
MAX_TIMESTAMP_DIGITS = 18  # as every integer the API reads (core/query_params.py)
REFETCH_MIN_SECONDS = 60
HEADERS = ("X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp", "X-Fal-Webhook-Signature")

_lock = threading.Lock()
_cache: dict = {"keys": [], "fetched_at": 0.0, "url": None}


def invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_signature", message)


def _public_keys(jwks) -> list[Ed25519PublicKey]:
    keys = []
    for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if not isinstance(jwk, dict) or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
            continue
        try:
            raw = base64.urlsafe_b64decode(jwk["x"].rstrip("=") + "=" * (-len(jwk["x"].rstrip("=")) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (ValueError, binascii.Error):
            continue
    return keys


def _fetch_keys() -> list[Ed25519PublicKey]:
    try:
        response = httpx.get(settings.FAL_JWKS_URL, timeout=10)
        response.raise_for_status()
        keys = _public_keys(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise ApiError(503, "service_unavailable", "Fal's signing keys could not be fetched.") from exc
    _cache.update(keys=keys, fetched_at=time.monotonic(), url=settings.FAL_JWKS_URL)
    return keys


def signing_keys(refresh: bool = False) -> list[Ed25519PublicKey]:
    """Fal's public keys, cached; `refresh` refetches them if the cache is older than a minute."""
    with _lock:
        age = time.monotonic() - _cache["fetched_at"]
        stale = _cache["url"] != settings.FAL_JWKS_URL or age > settings.FAL_JWKS_CACHE_SECONDS
        if stale or (refresh and age > REFETCH_MIN_SECONDS):
            return _fetch_keys()
        return _cache["keys"]


def clear_cache() -> None:
    with _lock:
        _cache.update(keys=[], fetched_at=0.0, url=None)


def check_fal_signature(headers, body: bytes) -> str:
    """Verify a webhook; returns its request id (header). 401 `invalid_signature` otherwise."""
    values = [headers.get(name, "") for name in HEADERS]
    if not all(values):
        raise invalid(f"A Fal webhook carries the headers {', '.join(HEADERS)}.")
    request_id, user_id, timestamp, signature_hex = values
    try:
        # ASCII digits only, few enough to compare with the clock (309 digits overflow a float)
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
            raise ValueError(timestamp)
        sent_at = int(timestamp)
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise invalid("X-Fal-Webhook-Timestamp must be Unix seconds and the signature hex.") from None
    if abs(time.time() - sent_at) > TOLERANCE_SECONDS:
        raise invalid(f"The webhook's timestamp is more than {TOLERANCE_SECONDS} s from now.")
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    for refresh in (False, True):
        for key in signing_keys(refresh=refresh):
            try:
                key.verify(signature, message)
                return request_id
            except InvalidSignature:
                continue
    raise invalid("The webhook's signature is not Fal's.")
