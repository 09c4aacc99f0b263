"""POST /attachments/upload (spec/agents-execute.txt): a file for an execute request's `attachments`."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApiError
from core.timestamps import iso_utc
from files.services import MAX_ATTACHMENT_BYTES, upload_attachment


def file_data(stored) -> dict:
    return {
        "storage_key": stored.storage_key,
        "filename": stored.filename,
        "content_type": stored.content_type,
        "size_bytes": stored.size_bytes,
        "created_at": iso_utc(stored.created_at),
    }


class AttachmentUploadView(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Upload an attachment",
        description="multipart/form-data with the field `file`; at most 50 MiB; image/jpeg, image/png, image/gif, "
        "image/webp, application/pdf, text/plain, text/csv or text/markdown, checked against the file's bytes. "
        "Pass the returned `storage_key` in an execute request's `attachments`.",
        request={
            "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
        responses={
            201: OpenApiResponse(description='{"data": {"storage_key", "filename", "content_type", "size_bytes"}}')
        },
    )
    def post(self, request):
        # Refuse an oversized body before reading it (a little room for the multipart framing).
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_ATTACHMENT_BYTES + 64 * 1024:
            raise ApiError(413, "file_too_large", "Attachments are limited to 50 MiB.", field="file")
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError(400, "file_required", "Send the file in the multipart field `file`.", field="file")
        return Response({"data": file_data(upload_attachment(request.user, upload))}, status=201)
