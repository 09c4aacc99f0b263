"""One error envelope for every surface: {"error": {"code": ..., "message": ..., "field": ...}}.

DRF views render it through api/http/exception_handler.py. This module imports nothing of DRF's
views: the parser and the authenticator that DRF's settings import use ApiError."""

from django.http import JsonResponse

# RFC 9110: a 401 says how to authenticate. Every surface takes its API key as a Bearer token (or in
# X-API-Key); DRF's authenticator (accounts/authentication.py) and error_json send this challenge.
WWW_AUTHENTICATE = 'Bearer realm="api"'


class ApiError(Exception):
    """Raised by services and views; rendered as the error envelope with a stable code."""

    headers: dict = {}  # response headers that go with the error (a 429's Retry-After)

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None, **extra):
        super().__init__(message)
        self.status_code, self.code, self.message, self.field, self.extra = status_code, code, message, field, extra

    def response_headers(self) -> dict:
        return {**challenge_headers(self.status_code), **self.headers}

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}


class RateLimited(ApiError):
    """429 `rate_limited`: over a rate limit; `Retry-After` says in how many seconds to try again."""

    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(429, "rate_limited", message)
        self.headers = {"Retry-After": str(retry_after_seconds)}


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"The {what} does not exist.")


def challenge_headers(status_code: int) -> dict:
    return {"WWW-Authenticate": WWW_AUTHENTICATE} if status_code == 401 else {}


def error_json(exc: ApiError) -> JsonResponse:
    return JsonResponse(exc.body(), status=exc.status_code, headers=exc.response_headers())
