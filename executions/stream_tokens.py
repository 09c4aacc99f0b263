"""Short-lived signed tokens for browsers' EventSource, which cannot send an API-key header.

`POST /executions/{id}/stream-token` (with the key) returns a token valid for one execution and
SSE_TOKEN_MAX_AGE_SECONDS; `GET /executions/{id}/events?token=...` accepts it instead of the key.
Revoking the key revokes its tokens; a request with a token counts against its key's rate limit.
"""

from django.conf import settings
from django.core import signing

from accounts.authentication import AuthError, Caller
from accounts.models import ApiKey
from accounts.rate_limits import check_rate_limit

SALT = "executions.stream-token"


def issue_stream_token(caller: Caller, execution) -> str:
    return signing.dumps({"execution": str(execution.id), "key": str(caller.api_key.id)}, salt=SALT)


def caller_from_stream_token(token: str, execution_id) -> Caller:
    try:
        claims = signing.loads(token, salt=SALT, max_age=settings.SSE_TOKEN_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise AuthError("stream_token_expired", "The stream token has expired; ask for a new one.")
    except signing.BadSignature:
        raise AuthError("invalid_stream_token", "The stream token is invalid.")
    api_key = (
        ApiKey.objects.select_related("workspace", "principal")
        .filter(id=claims["key"], revoked_at__isnull=True)
        .first()
    )
    if api_key is None or claims["execution"] != str(execution_id):
        raise AuthError("invalid_stream_token", "The stream token is not valid for this execution.")
    check_rate_limit(api_key)
    return Caller(api_key=api_key)
