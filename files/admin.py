from django.contrib import admin
from django.http import Http404
from django.urls import path, reverse
from django.utils.html import format_html

from core.admin import check_view_permission
from files.models import StoredFile
from files.responses import stored_file_response


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = (
        "storage_key",
        "filename",
        "purpose",
        "content_type",
        "size_bytes",
        "workspace",
        "created_at",
        "download",
    )
    list_filter = ("purpose", "content_type", "workspace")
    search_fields = ("storage_key", "filename")
    readonly_fields = ("storage_key", "filename", "content_type", "size_bytes", "workspace", "principal", "purpose")

    @admin.display(description="download")
    def download(self, stored):
        return format_html('<a href="{}">download</a>', reverse("admin:files_storedfile_download", args=[stored.id]))

    def get_urls(self):
        return [
            path(
                "<uuid:file_id>/download/",
                self.admin_site.admin_view(self.download_file),
                name="files_storedfile_download",
            ),
            *super().get_urls(),
        ]

    def download_file(self, request, file_id):
        check_view_permission(request, StoredFile)
        stored = StoredFile.objects.filter(id=file_id).first()
        if stored is None:
            raise Http404("No such file.")
        return stored_file_response(stored.storage_key, stored.content_type, stored.filename)
