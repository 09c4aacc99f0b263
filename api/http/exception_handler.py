"""DRF's exception handler (REST_FRAMEWORK's EXCEPTION_HANDLER): every error of a DRF view as the
error envelope of core/errors.py, DRF's own exceptions with a stable code."""

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.errors import ApiError

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
        return Response(exc.body(), status=exc.status_code, headers=exc.response_headers())
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
        body = {"code": _parse_error_code(context), "message": str(detail)}
    else:
        body = {"code": _DEFAULT_CODES.get(response.status_code, "error"), "message": str(detail)}
    response.data = {"error": body}
    return response


def _parse_error_code(context) -> str:
    """A body DRF could not parse: `invalid_multipart` for an upload (no boundary, a malformed
    part), `invalid_json` otherwise (the JSON routes' parser)."""
    request = context.get("request")
    content_type = (getattr(request, "content_type", "") or "").lower()
    return "invalid_multipart" if content_type.startswith("multipart/") else "invalid_json"
