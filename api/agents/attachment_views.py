"""POST /attachments/upload (spec/agents-execute.txt): a file for an execute request's `attachments`."""

from typing import Annotated, Any

from drf_spectacular.utils import extend_schema
from pydantic import Field, WithJsonSchema
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from api.http.request_limits import upload_limit
from api.http.schemas import Schema, data_envelope, parse, render
from core.errors import ApiError
from core.timestamps import iso_utc
from files.services import MAX_ATTACHMENT_BYTES, upload_attachment


class AttachmentUploadView(APIView):
    parser_classes = [MultiPartParser]
    body_limit = upload_limit(MAX_ATTACHMENT_BYTES, "Attachments")

    class Input(Schema):
        file: Annotated[Any, WithJsonSchema({"type": "string", "format": "binary"})]

    class Output(Schema):
        storage_key: str = Field(description="For an execute request's `attachments`")
        filename: str
        content_type: str
        size_bytes: int
        created_at: str = Field(json_schema_extra={"format": "date-time"})

    @extend_schema(
        summary="Upload an attachment",
        description="multipart/form-data with the field `file`; at most 50 MiB; image/jpeg, image/png, image/gif, "
        "image/webp, application/pdf, text/plain, text/csv or text/markdown, checked against the file's bytes. "
        "Pass the returned `storage_key` in an execute request's `attachments`.",
        request={"multipart/form-data": Input},
        responses={201: data_envelope(Output)},
    )
    def post(self, request):
        # Refuse an oversized body before reading it (a little room for the multipart framing).
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_ATTACHMENT_BYTES + 64 * 1024:
            raise ApiError(413, "file_too_large", "Attachments are limited to 50 MiB.", field="file")
        stored = upload_attachment(request.user, parse(self.Input, request.FILES.dict()).file)
        data = {
            "storage_key": stored.storage_key,
            "filename": stored.filename,
            "content_type": stored.content_type,
            "size_bytes": stored.size_bytes,
            "created_at": iso_utc(stored.created_at),
        }
        return Response({"data": render(self.Output, data)}, status=201)
