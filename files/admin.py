from django.contrib import admin

from files.models import StoredFile


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = ("storage_key", "filename", "purpose", "content_type", "size_bytes", "workspace", "created_at")
    list_filter = ("purpose", "content_type", "workspace")
    search_fields = ("storage_key", "filename")
    readonly_fields = ("storage_key", "filename", "content_type", "size_bytes", "workspace", "principal", "purpose")
