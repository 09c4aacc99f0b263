"""Django's error pages as the error envelope on every route but the admin's, which keeps Django's
HTML: a `<uuid:>` path that does not match, a malformed request, an unhandled exception
(config/urls.py names these handlers)."""

from django.urls import reverse
from django.views import defaults

from core.errors import ApiError, error_json, not_found


def is_admin(request) -> bool:
    return request.path.startswith(reverse("admin:index"))


def bad_request(request, exception):
    if is_admin(request):
        return defaults.bad_request(request, exception)
    return error_json(ApiError(400, "invalid_request", "The request is malformed."))


def permission_denied(request, exception):
    if is_admin(request):
        return defaults.permission_denied(request, exception)
    return error_json(ApiError(403, "forbidden", "You may not do this."))


def page_not_found(request, exception):
    if is_admin(request):
        return defaults.page_not_found(request, exception)
    return error_json(not_found())


def server_error(request):
    if is_admin(request):
        return defaults.server_error(request)
    return error_json(ApiError(500, "internal_error", "The server failed to answer this request."))
