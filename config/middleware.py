"""Response headers of every authenticated response (spec/agents-execute.txt, "Response Headers")."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


def _add_workspace_headers(request, response):
    caller = getattr(request, "caller", None)
    if caller is not None:
        workspace = caller.workspace
        response["X-Workspace-Id"] = f"workspace:{workspace.id}"
        response["X-App-Version"] = workspace.app_version_id or "none"
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
        return _add_workspace_headers(request, self.get_response(request))

    async def __acall__(self, request):
        return _add_workspace_headers(request, await self.get_response(request))
