"""Shared pieces of the operators' admin."""

from django.contrib import admin


class ReadOnlyTabularInline(admin.TabularInline):
    """Rows shown for the record (events, ledger entries, messages...): never added or deleted here."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False
