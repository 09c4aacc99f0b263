"""The skills API's personal files of the caller: GET/POST /v1/files/, GET/DELETE /v1/files/<name>."""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApiError
from core.query_params import int_query_param
from core.timestamps import iso_utc
from files.selectors import personal_file, personal_files
from files.services import (
    delete_personal_file,
    size_limit_text,
    upload_personal_file,
)


def personal_file_data(stored) -> dict:
    return {
        "id": str(stored.id),
        "filename": stored.filename,
        "size_bytes": stored.size_bytes,
        "content_type": stored.content_type,
        "created_at": iso_utc(stored.created_at),
    }


class PersonalFileSerializer(serializers.Serializer):
    """A file of the caller's personal collection (the schema of personal_file_data())."""

    id = serializers.UUIDField()
    filename = serializers.CharField()
    size_bytes = serializers.IntegerField()
    content_type = serializers.CharField()
    created_at = serializers.DateTimeField()


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

    @extend_schema(
        operation_id="files_list",
        tags=["files"],
        summary="List the caller's personal files",
        description="The files of the API key's principal, ordered by filename. `limit` 1-200 (default 100), "
        "`offset` from 0.",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, OpenApiParameter.QUERY, description="1-200, default 100"),
            OpenApiParameter("offset", OpenApiTypes.INT, OpenApiParameter.QUERY, description="default 0"),
        ],
        responses={
            200: inline_serializer("PersonalFileList", {"data": PersonalFileSerializer(many=True)}),
            400: ERROR_RESPONSE,
        },
    )
    def get(self, request):
        limit = int_query_param(request.query_params, "limit", 100, 1, 200, code="invalid_request")
        offset = int_query_param(request.query_params, "offset", 0, 0, code="invalid_request")
        files = personal_files(request.user.principal, limit=limit, offset=offset)
        return Response({"data": [personal_file_data(stored) for stored in files]})

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
            201: inline_serializer("PersonalFileUpload", {"data": PersonalFileSerializer()}),
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
        return Response({"data": personal_file_data(stored)}, status=201)


class PersonalFileView(APIView):
    """GET and DELETE /v1/files/{filename}: one file of the caller's personal collection."""

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
            200: inline_serializer("PersonalFileDetail", {"data": PersonalFileSerializer()}),
            404: ERROR_RESPONSE,
        },
    )
    def get(self, request, filename):
        return Response({"data": personal_file_data(self._get(request, filename))})

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
