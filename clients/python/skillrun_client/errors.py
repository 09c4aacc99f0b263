"""The API's error envelope `{"error": {"code", "message", "field"}}` as exceptions, one class per
status family, so callers catch `NotFoundError` or test `exc.code`."""

import httpx


class SkillrunError(Exception):
    """An error answer of the API (or, for `TransportError`, no answer at all)."""

    def __init__(self, message: str, *, code: str, status: int | None, field: str | None = None, body=None):
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.message = message
        self.code = code
        self.status = status
        self.field = field
        self.body = body or {}

    @property
    def execution_id(self) -> str | None:
        """The execution an error names (a reused Idempotency-Key's original execution)."""
        return self.body.get("error", {}).get("execution_id")


class BadRequestError(SkillrunError):  # 400
    pass


class AuthenticationError(SkillrunError):  # 401
    pass


class PaymentRequiredError(SkillrunError):  # 402 insufficient_credits
    pass


class PermissionDeniedError(SkillrunError):  # 403
    pass


class NotFoundError(SkillrunError):  # 404
    pass


class ConflictError(SkillrunError):  # 409
    pass


class PayloadTooLargeError(SkillrunError):  # 413
    pass


class UnprocessableError(SkillrunError):  # 422
    pass


class RateLimitError(SkillrunError):  # 429
    pass


class ServerError(SkillrunError):  # 5xx
    pass


class TransportError(SkillrunError):
    """The server could not be reached, or the connection broke (after the retries allowed)."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitError,
}


def error_from_response(response: httpx.Response) -> SkillrunError:
    """The exception for an error response (its body read)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else SkillrunError)
    return cls(
        error.get("message") or response.reason_phrase,
        code=error.get("code") or f"http_{status}",
        status=status,
        field=error.get("field"),
        body=body if isinstance(body, dict) else {},
    )
