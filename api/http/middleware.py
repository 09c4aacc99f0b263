"""Our middleware: NUL characters refused before anything reads them, the response headers of every
authenticated response (spec/agents-execute.txt, "Response Headers": X-Workspace-Id, X-App-Version,
and X-Credits-Remaining for end-user keys of a customer), and Django's header-only middleware with
their hooks run on the event loop."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django import db
from django.contrib.auth import middleware as auth
from django.core.exceptions import BadRequest
from django.http import Http404
from django.middleware import common

from accounts.credits import remaining_credits
from accounts.models import ApiKeyKind
from api.http.errors import is_admin
from core.errors import ApiError, error_json


class SyncAndAsyncMiddleware:
    """Base of our middleware: called the way the chain runs (async under ASGI, sync under the test
    client and the admin's WSGI), with no thread hop (Django's MiddlewareMixin runs every hook of an
    async chain through a thread). Subclasses override `handle` (sync) and `__acall__` (async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        return self.__acall__(request) if iscoroutinefunction(self) else self.handle(request)

    def handle(self, request):
        return self.get_response(request)

    async def __acall__(self, request):
        return await self.get_response(request)


class NulCharacterMiddleware(SyncAndAsyncMiddleware):
    """A NUL in the path or the query string is refused before any view: PostgreSQL text cannot
    hold one, so a view would pass it to a query and answer 500. In the path: 404, as for any path
    that names nothing (no id, slug or filename holds a NUL); in a query parameter's name or value:
    400 `invalid_query_parameter` naming it. (A NUL or another control character in a header is
    refused by the HTTP server itself, uvicorn's httptools, with its own 400.)"""

    def handle(self, request):
        return self._refusal(request) or self.get_response(request)

    async def __acall__(self, request):
        return self._refusal(request) or await self.get_response(request)

    @staticmethod
    def _refusal(request):
        if "\x00" in request.path:
            raise Http404("A path with a NUL names nothing.")
        if "%00" not in request.META.get("QUERY_STRING", ""):
            return None  # the only way a query string decodes to a NUL
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                if is_admin(request):
                    raise BadRequest("A query parameter holds a NUL.")
                field = name if "\x00" not in name else None
                return error_json(
                    ApiError(400, "invalid_query_parameter", "Query parameters may not hold NUL.", field=field)
                )
        return None


def _has_credits_header(caller) -> bool:
    """X-Credits-Remaining is for end-user keys of a customer only (known without a query)."""
    return (
        caller is not None and caller.api_key.kind == ApiKeyKind.END_USER and caller.principal.customer_id is not None
    )


def _credits_remaining(caller, response):
    """The customer's balance, read after the view ran (so it includes this request's hold); not
    after a 503, when the database it would read is likely the dependency that is down. When that
    read itself finds PostgreSQL down (a view that needed no query, e.g. an artifact's redirect,
    answered meanwhile), the header is left out: this runs outside DependencyErrorsMiddleware, and the
    view's answer must not become a 500 for a header."""
    if not _has_credits_header(caller) or response.status_code == 503:
        return None
    try:
        return remaining_credits(caller.principal)
    except (db.OperationalError, db.InterfaceError):  # a pool timeout included (Django wraps psycopg's)
        return None


def _add_workspace_headers(request, response, credits=None):
    caller = getattr(request, "caller", None)
    if caller is not None:
        workspace = caller.workspace
        response["X-Workspace-Id"] = f"workspace:{workspace.id}"
        response["X-App-Version"] = workspace.app_version_id or "none"
        if credits is not None:
            response["X-Credits-Remaining"] = f"{credits.normalize():f}"
    return response


class WorkspaceHeadersMiddleware(SyncAndAsyncMiddleware):
    """X-Workspace-Id and X-App-Version, for sync (DRF) and async (SSE) views alike."""

    def handle(self, request):
        response = self.get_response(request)
        return _add_workspace_headers(request, response, _credits_remaining(getattr(request, "caller", None), response))

    async def __acall__(self, request):
        response = await self.get_response(request)
        caller = getattr(request, "caller", None)
        # a hop through a thread costs ~0.1 ms of CPU: only when there is a balance to read
        credits = await sync_to_async(_credits_remaining)(caller, response) if _has_credits_header(caller) else None
        return _add_workspace_headers(request, response, credits)


# --- Django's middleware whose hooks cannot block, run on the event loop -------------------------


class InlineHooksMixin:
    """Runs a Django middleware's process_request / process_response on the event loop.

    Django's MiddlewareMixin sends every hook of every middleware through a thread under ASGI
    (about 0.1 ms of CPU each, a dozen a request). CommonMiddleware and AuthenticationMiddleware
    only read the request, resolve the URL and set headers or a lazy request.user (no database, no
    file, no network), so they need no thread; the ones that may read the session or parse a form
    body (sessions, CSRF, messages) keep Django's. Security and X-Frame-Options are as cheap but
    stay Django's own classes: `check --deploy` looks for them by their dotted path. Touching the
    database here would raise SynchronousOnlyOperation, not block the loop silently.
    """

    async def __acall__(self, request):
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class CommonMiddleware(InlineHooksMixin, common.CommonMiddleware):
    pass


class AuthenticationMiddleware(InlineHooksMixin, auth.AuthenticationMiddleware):
    """Only sets the lazy request.user / request.auser; the admin's sync views resolve them."""
