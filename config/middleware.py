"""Response headers of every authenticated response (spec/agents-execute.txt, "Response Headers"):
X-Workspace-Id, X-App-Version, and X-Credits-Remaining for end-user keys of a customer."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async

from accounts.credits import remaining_credits
from accounts.models import ApiKeyKind


def _credits_remaining(caller):
    """The customer's balance, read after the view ran (so it includes this request's hold)."""
    if caller is None or caller.api_key.kind != ApiKeyKind.END_USER:
        return None
    return remaining_credits(caller.principal)


def _add_workspace_headers(request, response, credits=None):
    caller = getattr(request, "caller", None)
    if caller is not None:
        workspace = caller.workspace
        response["X-Workspace-Id"] = f"workspace:{workspace.id}"
        response["X-App-Version"] = workspace.app_version_id or "none"
        if credits is not None:
            response["X-Credits-Remaining"] = f"{credits.normalize():f}"
    return response


class WorkspaceHeadersMiddleware:
    """X-Workspace-Id and X-App-Version, for sync (DRF) and async (SSE) views alike."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        response = self.get_response(request)
        return _add_workspace_headers(request, response, _credits_remaining(getattr(request, "caller", None)))

    async def __acall__(self, request):
        response = await self.get_response(request)
        credits = await sync_to_async(_credits_remaining)(getattr(request, "caller", None))
        return _add_workspace_headers(request, response, credits)
