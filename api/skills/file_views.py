"""The skills API's personal files of the caller: GET/POST /v1/files/, GET/DELETE /v1/files/<name>."""

import uuid
from datetime import datetime

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import ConfigDict
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from api.http.request_limits import upload_limit
from api.http.schemas import Schema, data_envelope, render
from core.errors import ApiError
from core.pagination import UncountedLimitOffsetPagination
from files.selectors import personal_file, personal_files
from files.services import (
    delete_personal_file,
    size_limit_text,
    upload_personal_file,
)


class PersonalFile(Schema):
    """A file of the caller's personal collection."""

    id: uuid.UUID
    filename: str
    size_bytes: int
    content_type: str
    created_at: datetime

    model_config = ConfigDict(from_attributes=True)  # rendered from a StoredFile row


PersonalFileEnvelope = data_envelope(PersonalFile)
ERROR_RESPONSE = OpenApiResponse(description='{"error": {"code", "message", "field"}}')
FILENAME_PARAMETER = OpenApiParameter(
    "filename",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The file's name in the caller's personal collection (URL-encoded; may contain dots and spaces).",
)


class PersonalFilesView(APIView):
    """GET and POST /v1/files/: the caller's personal collection, where skill executions'
    `file_source_ids` are taken from (spec/skills-start-standalone-execution.txt)."""

    parser_classes = [MultiPartParser]
    body_limit = upload_limit("FILE_UPLOAD_MAX_BYTES")
    pagination_class = UncountedLimitOffsetPagination
    Output = PersonalFile

    @extend_schema(
        operation_id="files_list",
        tags=["files"],
        summary="List the caller's personal files",
        description="The files of the API key's principal, ordered by filename. `limit` 1-200 (default 100), "
        "`offset` from 0.",
        responses={200: PersonalFile, 400: ERROR_RESPONSE},
    )
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(personal_files(request.user.principal), request, self)
        return paginator.get_paginated_response([render(self.Output, stored) for stored in page])

    @extend_schema(
        operation_id="files_upload",
        tags=["files"],
        summary="Upload a file to the caller's personal collection",
        description="multipart/form-data with the field `file`; any content type; at most `FILE_UPLOAD_MAX_BYTES` "
        "(50 MiB by default). The file is addressed by its sanitised filename: uploading the same name again "
        "replaces the earlier file. Pass the filename in a skill execution's `file_source_ids`.",
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        responses={
            201: PersonalFileEnvelope,
            400: ERROR_RESPONSE,
            413: ERROR_RESPONSE,
        },
    )
    def post(self, request):
        limit = settings.FILE_UPLOAD_MAX_BYTES
        # Refuse an oversized body before reading it (a little room for the multipart framing).
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            raise ApiError(413, "file_too_large", f"Files are limited to {size_limit_text(limit)}.", field="file")
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError(400, "file_required", "Send the file in the multipart field `file`.", field="file")
        stored = upload_personal_file(request.user, upload)
        return Response({"data": render(self.Output, stored)}, status=201)


class PersonalFileView(APIView):
    """GET and DELETE /v1/files/{filename}: one file of the caller's personal collection."""

    Output = PersonalFile

    def _get(self, request, filename):
        stored = personal_file(request.user.principal, filename)
        if stored is None:
            raise ApiError(404, "not_found", "No file with this name in your collection.")
        return stored

    @extend_schema(
        operation_id="files_retrieve",
        tags=["files"],
        summary="A personal file's metadata",
        description="One file of the caller's personal collection, by filename; 404 `not_found` when the caller has "
        "no file with this name.",
        parameters=[FILENAME_PARAMETER],
        responses={
            200: PersonalFileEnvelope,
            404: ERROR_RESPONSE,
        },
    )
    def get(self, request, filename):
        return Response({"data": render(self.Output, self._get(request, filename))})

    @extend_schema(
        operation_id="files_destroy",
        tags=["files"],
        summary="Delete a personal file",
        description="Removes the file and its stored object.",
        parameters=[FILENAME_PARAMETER],
        responses={204: None, 404: ERROR_RESPONSE},
    )
    def delete(self, request, filename):
        delete_personal_file(self._get(request, filename))
        return Response(status=204)
