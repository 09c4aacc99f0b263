"""The skills API's execution routes (spec/skills-*.txt): start, list, get, cancel, follow (SSE),
the chat tool-call lookup, and artifact downloads. Every route is scoped to the caller's space:
another space, or another tenant's execution, is a 404."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from api.agents.execution_views import async_api_view, last_event_id, run_authenticated, sse_response
from api.http.openapi import LAST_EVENT_ID_HEADER, async_operation, path_param
from api.skills.serializers import artifact_from_token, skill_execution_data
from core.errors import ApiError, not_found
from core.ids import parse_prefixed_id
from core.query_params import int_query_param
from executions import services
from executions.models import Artifact, ExecutionSource, ExecutionState
from executions.selectors import readable_executions
from executions.skill_executions import caller_space, start_skill_execution
from executions.streaming import relay_events
from files.responses import stored_file_response

EXECUTION = OpenApiResponse(description='{"data": execution} — every field of the documented execution object')
MAX_PAGE = 200


def skill_executions(caller, space_id: str):
    caller_space(caller, space_id)
    return readable_executions(caller).filter(skill_version__isnull=False).select_related("skill_version__skill")


def get_skill_execution(caller, space_id: str, execution_id: str):
    parsed = parse_prefixed_id(execution_id, "execution")
    execution = skill_executions(caller, space_id).filter(id=parsed).first() if parsed else None
    if execution is None:
        raise not_found("execution")
    return execution


class SkillExecutionStartView(APIView):
    @extend_schema(
        summary="Start a standalone skill execution",
        description="`inputs` are validated against the live version's inputs schema (422 `invalid_inputs` lists "
        "every failing field in `error.errors`); `file_source_ids` are filenames of your personal collection "
        "(POST /v1/files/) staged into `inputs/materials/` (missing ones are skipped and reported in the "
        "`materials_staged` event); `model` is an alias on the space's allow-list (422 `model_not_allowed`). "
        "The same Idempotency-Key in the space within 24 h: 409 with the original execution's id.",
        request={
            "application/json": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {"type": "object"},
                    "file_source_ids": {"type": "array", "items": {"type": "string"}},
                    "model": {
                        "oneOf": [{"type": "string"}, {"type": "object", "properties": {"alias": {"type": "string"}}}]
                    },
                },
            }
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
        responses={201: EXECUTION},
    )
    def post(self, request, space_id, slug):
        execution = start_skill_execution(request.user, space_id, slug, request)
        return Response({"data": skill_execution_data(execution)}, status=201)


class SkillExecutionListView(APIView):
    @extend_schema(
        operation_id="skills_executions_list",
        summary="List a space's skill executions",
        description="Newest first. Filters: `state`, `skill` (slug), `source`; `limit` 1-200 (default 50), `offset`.",
        parameters=[OpenApiParameter(name, str) for name in ("state", "skill", "source")]
        + [OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: OpenApiResponse(description='{"data": [execution], "pagination": {limit, offset, total}}')},
    )
    def get(self, request, space_id):
        executions = skill_executions(request.user, space_id)
        filters = {
            "state": ("state", ExecutionState.values),
            "source": ("source", ExecutionSource.values),
            "skill": ("skill_version__skill__slug", None),
        }
        for param, (lookup, allowed) in filters.items():
            value = request.query_params.get(param)
            if value is None:
                continue
            if allowed is not None and value not in allowed:
                raise ApiError(400, f"invalid_{param}", f"{param} must be one of {', '.join(allowed)}.", field=param)
            executions = executions.filter(**{lookup: value})
        limit = int_query_param(request.query_params, "limit", 50, 1, MAX_PAGE)
        offset = int_query_param(request.query_params, "offset", 0, 0)
        page = executions.order_by("-created_at", "-id")[offset : offset + limit]
        return Response(
            {
                "data": [skill_execution_data(e) for e in page],
                "pagination": {"limit": limit, "offset": offset, "total": executions.count()},
            }
        )


class SkillExecutionDetailView(APIView):
    @extend_schema(operation_id="skills_execution_get", summary="Get a skill execution", responses={200: EXECUTION})
    def get(self, request, space_id, execution_id):
        return Response({"data": skill_execution_data(get_skill_execution(request.user, space_id, execution_id))})


class SkillExecutionCancelView(APIView):
    @extend_schema(
        summary="Cancel a skill execution",
        request=None,
        description="200 when cancelled at once (queued or suspended), 202 while a running worker stops, "
        "409 `execution_finished`.",
        responses={200: EXECUTION, 202: EXECUTION},
    )
    def post(self, request, space_id, execution_id):
        execution = services.check_request_cancel(get_skill_execution(request.user, space_id, execution_id))
        status = 200 if execution.state == ExecutionState.CANCELLED else 202
        return Response({"data": skill_execution_data(execution)}, status=status)


class ExecutionByChatToolCallView(APIView):
    @extend_schema(
        summary="Get the execution a chat tool call dispatched",
        description="Available from the moment the execution row exists (while it runs); 404 until then — poll "
        "briefly.",
        responses={200: EXECUTION},
    )
    def get(self, request, space_id, tool_call_id):
        execution = skill_executions(request.user, space_id).filter(chat_tool_call_id=tool_call_id).first()
        if execution is None or not tool_call_id:
            raise not_found("execution")
        return Response({"data": skill_execution_data(execution)})


@async_operation(
    path="/v1/spaces/{space_id}/skills/executions/{execution_id}/events",
    method="get",
    operation_id="skills_execution_events",
    tag="skills",
    summary="Follow a skill execution (SSE)",
    description="The execution's events: start, state_changed, materials_staged, node_start, iteration, "
    "reasoning, text, tool_call, tool_result, sub_execution_started, sub_execution_finished, "
    "node_complete, artifact, final or error. Resumable with `Last-Event-ID` (or `last_event_id`).",
    responses={200: "sse", **{status: "error" for status in (400, 401, 404)}},
    parameters=[path_param("space_id"), path_param("execution_id"), LAST_EVENT_ID_HEADER],
)
@async_api_view("GET")
async def skill_execution_events(request, space_id, execution_id):
    """GET .../skills/executions/{id}/events: the execution's SSE stream, resumable by Last-Event-ID."""

    def find(caller):
        after = last_event_id(request)
        return get_skill_execution(caller, space_id, execution_id), after

    execution, after = await run_authenticated(request, find)
    return sse_response(relay_events(execution.id, after_seq=after))


class ArtifactDownloadView(APIView):
    @extend_schema(
        summary="Download an artifact",
        description="The `download_url` of an artifact: signed for its tenant and expiring "
        "(ARTIFACT_URL_MAX_AGE_SECONDS); it also needs an API key of that tenant. Files on S3 redirect to a "
        "short-lived presigned URL.",
        parameters=[OpenApiParameter("token", str, required=True)],
        responses={200: OpenApiResponse(description="the file"), 302: OpenApiResponse(description="to S3")},
    )
    def get(self, request, artifact_id):
        claims = artifact_from_token(request.query_params.get("token", ""))
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
