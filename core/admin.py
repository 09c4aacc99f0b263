"""Shared pieces of the operators' admin."""

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied


class ReadOnlyTabularInline(admin.TabularInline):
    """Rows shown for the record (events, ledger entries, messages...): never added or deleted here."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False


def check_view_permission(request, *models) -> None:
    """Raise PermissionDenied (403) unless the user may view (or change) each of these models, as
    the admin's own pages require: a view added to the admin (a download) is reached by any staff
    user otherwise. Checked before the object is looked up, so a 404 tells nothing either."""
    for model in models:
        opts = model._meta
        if not any(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("view", "change")
        ):
            raise PermissionDenied
