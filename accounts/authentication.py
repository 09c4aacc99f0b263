"""API-key authentication for all three surfaces.

The three specs send the key as `X-API-Key`, `Authorization: Bearer <key>` and a bare
`Authorization: <key>`. The agents API also sends `X-Workspace-Id: workspace:<id>`, which must name
the key's own workspace.
"""

from dataclasses import dataclass

from rest_framework import authentication, exceptions

from accounts.api_keys import find_active_key
from accounts.models import ApiKey, ApiKeyKind
from accounts.rate_limits import check_rate_limit
from core.errors import WWW_AUTHENTICATE
from core.structured_logs import bind_context


@dataclass
class Caller:
    """What a request authenticated as; set as request.user by DRF."""

    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def workspace(self):
        return self.api_key.workspace

    @property
    def principal(self):
        return self.api_key.principal

    @property
    def is_workspace_key(self) -> bool:
        """A workspace (wak_) key, rather than an end user's (eak_)."""
        return self.api_key.kind == ApiKeyKind.WORKSPACE

    @property
    def tenant_id(self):
        return self.api_key.workspace.tenant_id

    @property
    def pk(self):  # django-eventstream identifies listeners by user pk
        return str(self.api_key.principal_id)


class AuthError(Exception):
    def __init__(self, code: str, message: str, status: int = 401):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def raw_key_from_headers(headers) -> str | None:
    key = headers.get("X-API-Key")
    if key:
        return key.strip()
    value = headers.get("Authorization", "").strip()
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest:
        return rest.strip()
    return value


def authenticate_headers(headers) -> Caller:
    """Resolve the caller from request headers or raise AuthError; a key over its rate limit
    raises RateLimited (429), after the workspace check (accounts/rate_limits.py)."""
    raw_key = raw_key_from_headers(headers)
    if not raw_key:
        raise AuthError("authentication_required", "Send an API key in X-API-Key or Authorization.")
    api_key = find_active_key(raw_key)
    if api_key is None:
        raise AuthError("invalid_api_key", "The API key is invalid or has been revoked.")
    workspace_header = headers.get("X-Workspace-Id")
    if workspace_header:
        kind, _, workspace_id = workspace_header.strip().partition(":")
        if kind != "workspace" or workspace_id != str(api_key.workspace_id):
            raise AuthError("workspace_mismatch", "X-Workspace-Id must be workspace:<id> of the key's workspace.", 403)
    check_rate_limit(api_key)
    bind_context(workspace_id=str(api_key.workspace_id))  # the request's later log lines name it
    return Caller(api_key=api_key)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        try:
            caller = authenticate_headers(request.headers)
        except AuthError as exc:
            if exc.status == 403:
                raise exceptions.PermissionDenied({"code": exc.code, "message": exc.message})
            raise exceptions.AuthenticationFailed({"code": exc.code, "message": exc.message})
        request._request.caller = caller  # for the response-header middleware
        return caller, caller.api_key

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE
