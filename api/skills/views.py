"""The skills API's execution routes (spec/skills-*.txt): start, list, get, cancel, follow (SSE),
the chat tool-call lookup, and artifact downloads. Every route is scoped to the caller's space:
another space, or another tenant's execution, is a 404."""

from typing import Annotated

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from rest_framework.response import Response
from rest_framework.views import APIView

from api.http.async_views import async_api_view, events_response, last_event_id, run_authenticated
from api.http.openapi import LAST_EVENT_ID_HEADER, STREAM_OVER, async_operation, path_param
from api.http.schemas import Schema, data_envelope, invalid, json_object, parse, parse_query, render
from api.skills.selectors import get_skill_execution, skill_execution_for_tool_call, skill_executions
from api.skills.serializers import SkillExecution, artifact_from_token
from core.errors import ApiError
from core.pagination import LimitOffsetPagination
from executions import services
from executions.idempotency import parse_idempotency_key, request_fingerprint
from executions.models import Artifact, ExecutionSource, ExecutionState
from executions.selectors import readable_executions
from executions.skill_executions import caller_space, get_startable_skill, start_skill_execution
from files.responses import stored_file_response

MAX_FILE_SOURCES = 100
MAX_FILENAME_CHARS = 255
SkillExecutionEnvelope = data_envelope(SkillExecution)


def _inputs_object(value):
    if not isinstance(value, dict):
        raise invalid(
            "invalid_inputs",
            "inputs is required and must be an object.",
            422,
            errors=[{"field": "inputs", "message": "inputs must be an object"}],
        )
    return value


def _filenames(value):
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_FILE_SOURCES:
        raise invalid(
            "invalid_file_source_ids", f"file_source_ids must be a list of at most {MAX_FILE_SOURCES} filenames.", 422
        )
    return value


def _filename(value):
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILENAME_CHARS:
        raise invalid(
            "invalid_file_source_ids", f"Each filename is a string of 1 to {MAX_FILENAME_CHARS} characters.", 422
        )
    return value


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


class ModelChoice(Schema):
    alias: str | None = Field(None, min_length=1)


class SkillExecutionStartView(APIView):
    class Input(Schema):
        model_config = ConfigDict(json_schema_extra={"required": ["inputs"]})  # a missing one is a 422

        inputs: Annotated[dict, BeforeValidator(_inputs_object)] = Field(
            None,
            validate_default=True,
            description="Validated against the live version's inputs schema",
        )
        file_source_ids: Annotated[
            list[Annotated[str, BeforeValidator(_filename)]],
            BeforeValidator(_filenames),
            AfterValidator(_unique),
        ] = Field(
            [],
            validate_default=True,
            description="Filenames of your personal collection (POST /v1/files/)",
            json_schema_extra={"maxItems": MAX_FILE_SOURCES},
        )
        model: Annotated[str, Field(min_length=1)] | ModelChoice | None = Field(
            None, description="An alias of the space's allow-list"
        )

        @property
        def model_alias(self) -> str | None:
            return self.model.alias if isinstance(self.model, ModelChoice) else self.model

    Output = SkillExecution

    @extend_schema(
        summary="Start a standalone skill execution",
        description="`inputs` are validated against the live version's inputs schema (422 `invalid_inputs` lists "
        "every failing field in `error.errors`); `file_source_ids` are filenames of your personal collection "
        "(POST /v1/files/) staged into `inputs/materials/` (missing ones are skipped and reported in the "
        "`materials_staged` event); `model` is an alias on the space's allow-list (422 `model_not_allowed`). "
        "The same Idempotency-Key in the space within 24 h: 409 with the original execution's id.",
        request=Input,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
        responses={
            201: SkillExecutionEnvelope,
            409: OpenApiResponse(description="`idempotency_key_reused`, `skill_not_published`"),
            422: OpenApiResponse(
                description="`invalid_inputs`, `invalid_file_source_ids`, `model_not_allowed`, `idempotency_key_mismatch`"
            ),
        },
    )
    def post(self, request, space_id, slug):
        space = caller_space(request.user, space_id)
        skill = get_startable_skill(space, slug)
        idempotency_key = parse_idempotency_key(request.headers)
        body = json_object(request.body)
        data = parse(self.Input, body)
        execution = start_skill_execution(
            caller=request.user,
            space=space,
            skill=skill,
            inputs=data.inputs,
            file_source_ids=data.file_source_ids,
            model=data.model_alias,
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint(f"skills {skill.id}", body),
        )
        return Response({"data": render(self.Output, execution)}, status=201)


class SkillExecutionListView(APIView):
    pagination_class = LimitOffsetPagination

    class Input(Schema):
        state: ExecutionState | None = None
        skill: str | None = Field(None, description="A skill's slug")
        source: ExecutionSource | None = None

    Output = SkillExecution

    @extend_schema(
        operation_id="skills_executions_list",
        summary="List a space's skill executions",
        description="Newest first. Filters: `state`, `skill` (slug), `source`; `limit` 1-200 (default 50), `offset`.",
        parameters=[Input],
        responses={200: Output},
    )
    def get(self, request, space_id):
        filters = parse_query(self.Input, request.query_params)
        executions = skill_executions(
            request.user, space_id, state=filters.state, skill=filters.skill, source=filters.source
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(executions, request, self)
        return paginator.get_paginated_response([render(self.Output, execution) for execution in page])


class SkillExecutionDetailView(APIView):
    Output = SkillExecution

    @extend_schema(
        operation_id="skills_execution_get", summary="Get a skill execution", responses={200: SkillExecutionEnvelope}
    )
    def get(self, request, space_id, execution_id):
        execution = get_skill_execution(request.user, space_id, execution_id)
        return Response({"data": render(self.Output, execution)})


class SkillExecutionCancelView(APIView):
    Output = SkillExecution

    @extend_schema(
        summary="Cancel a skill execution",
        request=None,
        description="200 when cancelled at once (queued or suspended), 202 while a running worker stops, "
        "409 `execution_finished`.",
        responses={
            200: SkillExecutionEnvelope,
            202: SkillExecutionEnvelope,
            409: OpenApiResponse(description="`execution_finished`"),
        },
    )
    def post(self, request, space_id, execution_id):
        execution = services.check_request_cancel(get_skill_execution(request.user, space_id, execution_id))
        status = 200 if execution.state == ExecutionState.CANCELLED else 202
        return Response({"data": render(self.Output, execution)}, status=status)


class ExecutionByChatToolCallView(APIView):
    Output = SkillExecution

    @extend_schema(
        summary="Get the execution a chat tool call dispatched",
        description="Available from the moment the execution row exists (while it runs); 404 until then — poll "
        "briefly.",
        responses={200: SkillExecutionEnvelope},
    )
    def get(self, request, space_id, tool_call_id):
        execution = skill_execution_for_tool_call(request.user, space_id, tool_call_id)
        return Response({"data": render(self.Output, execution)})


@async_operation(
    path="/v1/spaces/{space_id}/skills/executions/{execution_id}/events",
    method="get",
    operation_id="skills_execution_events",
    tag="skills",
    summary="Follow a skill execution (SSE)",
    description="The execution's events: start, state_changed, materials_staged, node_start, iteration, "
    "reasoning, text, tool_call, tool_result, sub_execution_started, sub_execution_finished, "
    "node_complete, artifact, resumed (queued again), final or error. Resumable with `Last-Event-ID` (or `last_event_id`).",
    responses={200: "sse", 204: STREAM_OVER, **{status: "error" for status in (400, 401, 404)}},
    parameters=[path_param("space_id"), path_param("execution_id"), LAST_EVENT_ID_HEADER],
)
@async_api_view("GET")
async def skill_execution_events(request, space_id, execution_id):
    """GET .../skills/executions/{id}/events: the execution's SSE stream, resumable by Last-Event-ID."""

    def find(caller):
        after = last_event_id(request)
        return get_skill_execution(caller, space_id, execution_id), after

    execution, after = await run_authenticated(request, find)
    return events_response(execution, after)


class ArtifactDownloadView(APIView):
    class Input(Schema):
        model_config = ConfigDict(json_schema_extra={"required": ["token"]})  # a missing one is a 404

        token: str = Field("", description="From the artifact's `download_url`")

    @extend_schema(
        summary="Download an artifact",
        description="The `download_url` of an artifact: signed for its tenant and expiring "
        "(ARTIFACT_URL_MAX_AGE_SECONDS); it also needs an API key of that tenant. Files on S3 redirect to a "
        "short-lived presigned URL.",
        parameters=[Input],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="the file as an attachment, in its type when passive (else text/plain or "
                "application/octet-stream), sandboxed (files/download_headers.py)",
            ),
            302: OpenApiResponse(description="to S3"),
        },
    )
    def get(self, request, artifact_id):
        claims = artifact_from_token(parse_query(self.Input, request.query_params).token)
        artifact = Artifact.objects.select_related("execution").filter(id=artifact_id).first() if claims else None
        if (
            artifact is None
            or claims["a"] != str(artifact.id)
            or claims["t"] != str(request.user.workspace.tenant_id)
            or not readable_executions(request.user).filter(id=artifact.execution_id).exists()
        ):
            raise ApiError(404, "not_found", "This download link is invalid, expired, or not yours.")
        return stored_file_response(
            artifact.storage_key, artifact.document_type, artifact.relpath_in_workspace.rsplit("/", 1)[-1]
        )
