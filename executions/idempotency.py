"""Idempotency-Key on execute endpoints (spec/agents-execute.txt and the IETF draft).

The first request with a key creates the execution; the same key from the same principal (the
key's owner: an end user, or a workspace key's own principal) in the workspace within 24 h is a 409 that names the original execution (no execution, no charge); the same key with a
different request is a 422; after 24 h the key is processed normally again. The key is claimed by
one INSERT ... ON CONFLICT in the transaction that inserts the execution, so concurrent identical
requests wait on the unique index and exactly one of them creates an execution. Keys are per
principal, so another end user's identical key is a new request and never learns the original's id.
"""

import hashlib
import json
from datetime import timedelta

from django.db import connection

from core.errors import ApiError
from executions.models import Execution, IdempotencyKey

IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255

_CLAIM_SQL = """
INSERT INTO executions_idempotencykey (workspace_id, principal_id, key, request_hash, created_at, expires_at)
VALUES (%(workspace)s, %(principal)s, %(key)s, %(hash)s, now(), now() + %(ttl)s)
ON CONFLICT (workspace_id, principal_id, key) DO UPDATE
   SET request_hash = EXCLUDED.request_hash, created_at = EXCLUDED.created_at,
       expires_at = EXCLUDED.expires_at, execution_id = NULL
 WHERE executions_idempotencykey.expires_at <= now()
RETURNING id
"""


def parse_idempotency_key(headers) -> str | None:
    key = headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            field="Idempotency-Key",
        )
    return key


def request_fingerprint(route: str, body: dict) -> str:
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim_idempotency_key(*, caller, key: str, fingerprint: str, prefixed_ids: bool = True) -> IdempotencyKey:
    """Take the caller's key for a new execution, or raise 409/422. Call inside the creating transaction.

    The 409 names the original execution as the surface writes ids: `execution:<uuid>` (agents
    API) or the bare UUID (skills API, `prefixed_ids=False`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "workspace": caller.workspace.id,
                "principal": caller.principal.id,
                "key": key,
                "hash": fingerprint,
                "ttl": IDEMPOTENCY_TTL,
            },
        )
        row = cursor.fetchone()
    if row is not None:
        return IdempotencyKey.objects.get(id=row[0])
    existing = IdempotencyKey.objects.get(workspace=caller.workspace, principal=caller.principal, key=key)
    if existing.request_hash != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_mismatch",
            "This Idempotency-Key was used with a different request in the last 24 hours.",
            field="Idempotency-Key",
        )
    original = Execution.objects.filter(id=existing.execution_id).first()
    raise ApiError(
        409,
        "idempotency_key_reused",
        "This Idempotency-Key was already used in the last 24 hours; no new execution was created.",
        field="Idempotency-Key",
        execution_id=(original.public_id if prefixed_ids else str(original.id)) if original else None,
    )
