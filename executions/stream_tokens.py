"""Short-lived signed tokens for browsers' EventSource, which cannot send an API-key header.

`POST /executions/{id}/stream-token` (with the key) returns a token valid for one execution and
SSE_TOKEN_MAX_AGE_SECONDS; `GET /executions/{id}/events?token=...` accepts it instead of the key.
Revoking the key revokes its tokens; a request with a token counts against its key's rate limit.

The operators' console mints one for a staff user instead of a key (`issue_operator_stream_token`,
from the execution's admin page, for its live tail): it is checked again when the stream opens (the
user still active, staff, allowed to view executions), so taking the permission away revokes it.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing

from accounts.authentication import AuthError, Caller
from accounts.models import ApiKey, ApiKeyKind, Workspace
from accounts.rate_limits import check_rate_limit

SALT = "executions.stream-token"


def issue_stream_token(caller: Caller, execution) -> str:
    return signing.dumps({"execution": str(execution.id), "key": str(caller.api_key.id)}, salt=SALT)


def issue_operator_stream_token(user, execution) -> str:
    """For a staff user who may view the execution (the admin view checks it, and so does the stream)."""
    return signing.dumps({"execution": str(execution.id), "operator": user.pk}, salt=SALT)


def may_view_executions(user) -> bool:
    return (
        user.is_active
        and user.is_staff
        and (user.has_perm("executions.view_execution") or user.has_perm("executions.change_execution"))
    )


def _operator_caller(user_id, execution_id) -> Caller:
    """An operator reads the execution as its workspace's own key would: an unsaved workspace key
    (no secret, no principal) stands for them, and the token names this one execution."""
    user = get_user_model().objects.filter(pk=user_id).first()
    workspace = Workspace.objects.filter(executions__id=execution_id).first()
    if user is None or workspace is None or not may_view_executions(user):
        raise AuthError("invalid_stream_token", "The stream token is not valid for this execution.")
    return Caller(api_key=ApiKey(workspace=workspace, kind=ApiKeyKind.WORKSPACE, prefix="operator", name=str(user)))


def caller_from_stream_token(token: str, execution_id) -> Caller:
    try:
        claims = signing.loads(token, salt=SALT, max_age=settings.SSE_TOKEN_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise AuthError("stream_token_expired", "The stream token has expired; ask for a new one.")
    except signing.BadSignature:
        raise AuthError("invalid_stream_token", "The stream token is invalid.")
    if "operator" in claims:
        if claims["execution"] != str(execution_id):
            raise AuthError("invalid_stream_token", "The stream token is not valid for this execution.")
        return _operator_caller(claims["operator"], execution_id)
    api_key = (
        ApiKey.objects.select_related("workspace", "principal")
        .filter(id=claims["key"], revoked_at__isnull=True)
        .first()
    )
    if api_key is None or claims["execution"] != str(execution_id):
        raise AuthError("invalid_stream_token", "The stream token is not valid for this execution.")
    check_rate_limit(api_key)
    return Caller(api_key=api_key)
