"""One error envelope for every surface: {"error": {"code": ..., "message": ..., "field": ...}}."""

from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(Exception):
    """Raised by services and views; rendered as the error envelope with a stable code."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None, **extra):
        super().__init__(message)
        self.status_code, self.code, self.message, self.field, self.extra = status_code, code, message, field, extra

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"The {what} does not exist.")


def error_json(exc: ApiError) -> JsonResponse:
    return JsonResponse(exc.body(), status=exc.status_code)


_DEFAULT_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request",
    status.HTTP_401_UNAUTHORIZED: "authentication_required",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}


def api_exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return Response(exc.body(), status=exc.status_code)
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else None
    if isinstance(detail, dict) and "code" in detail and "message" in detail:
        body = {"code": str(detail["code"]), "message": str(detail["message"])}
    elif isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        field, messages = next(iter(detail.items()))
        message = messages[0] if isinstance(messages, list) and messages else messages
        body = {"code": "invalid_request", "message": str(message), "field": field}
    elif isinstance(exc, exceptions.ParseError):
        body = {"code": "invalid_json", "message": str(detail)}
    else:
        body = {"code": _DEFAULT_CODES.get(response.status_code, "error"), "message": str(detail)}
    response.data = {"error": body}
    return response
