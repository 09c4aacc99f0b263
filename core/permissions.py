"""DRF permission classes shared by the HTTP surfaces."""

from rest_framework.permissions import BasePermission


class IsWorkspaceKey(BasePermission):
    """Routes that manage a workspace's data (a user's memory, purges) take a workspace (wak_) key;
    an end-user key is a 403 `forbidden` with the view's `workspace_key_message`. List it after
    IsAuthenticated: without a key the answer stays a 401."""

    message = "This route needs a workspace (wak_) key."

    def has_permission(self, request, view) -> bool:
        if request.user.is_workspace_key:
            return True
        self.message = getattr(view, "workspace_key_message", self.message)
        return False
