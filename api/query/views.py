"""The Executions query API (spec/executions-api.txt): `/api/v1/executions...`, camelCase JSON.

The spec's bodies are bare: an execution object, or for the list an array of them (the page's
metadata is in the X-Total-Count, X-Total-Pages, X-Page-Number, X-Page-Size and Link headers).
Errors use the platform's envelope `{"error": {"code", "message", "field"}}`. Every route is scoped
to what the key may read (workspace keys: the workspace's executions; end-user keys: their own);
anything else is a 404.
"""

from urllib.parse import urlencode

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKeyKind
from api.query import selectors as query
from core.errors import ApiError
from executions import purge

# --- the documented schema (these serializers only describe the JSON of api.query.selectors) ------------

STATUS_DESCRIPTION = (
    "The status of the execution: `queued` (waiting for a worker), `running`, `awaiting_client_tool` (waiting "
    "for a client tool's result), `awaiting_approval` (a human gate), `waiting_for_external_event`, "
    "`waiting_for_sub_execution` (waiting for a child execution or a batch's items), and the final ones "
    "`completed`, `failed`, `cancelled`."
)


class ExecutionUsageSerializer(serializers.Serializer):
    inputTokens = serializers.IntegerField()
    outputTokens = serializers.IntegerField()
    totalTokens = serializers.IntegerField()
    costUsd = serializers.FloatField(help_text="From the model alias's prices")
    wallclockMs = serializers.IntegerField(allow_null=True)
    iterationCount = serializers.IntegerField(help_text="Model turns")


class _DetailCommon(serializers.Serializer):
    source = serializers.ChoiceField(
        choices=["standalone", "chat", "api", "stream", "batch", "batch_item", "sub"],
        help_text="How the execution was started",
    )
    inputs = serializers.JSONField(allow_null=True, help_text="null once purged")
    outputs = serializers.JSONField(allow_null=True, help_text="null until it completes, and once purged")
    error = serializers.JSONField(
        allow_null=True, help_text="`{code, message}` of a failed or cancelled execution; null once purged"
    )
    failureReason = serializers.CharField(allow_null=True)
    usage = ExecutionUsageSerializer()
    chatThreadId = serializers.CharField(allow_null=True)
    chatMessageId = serializers.CharField(allow_null=True)
    chatToolCallId = serializers.CharField(allow_null=True)


class ExecutionDetailAgentSerializer(_DetailCommon):
    """An agent's execution (also a batch's parent execution, `source: batch`)."""

    type = serializers.ChoiceField(choices=[query.DetailType.AGENT])
    agentId = serializers.UUIDField(allow_null=True)
    agentVersionId = serializers.UUIDField(allow_null=True)
    versionNumber = serializers.IntegerField(allow_null=True)


class ExecutionDetailSkillSerializer(_DetailCommon):
    """A skill's execution: standalone, dispatched by a chat tool call, or a workflow's sub-execution."""

    type = serializers.ChoiceField(choices=[query.DetailType.SKILL])
    skillId = serializers.UUIDField()
    skillSlug = serializers.CharField()
    skillVersionId = serializers.UUIDField()
    versionNumber = serializers.IntegerField()


class ExecutionDetailBatchItemSerializer(_DetailCommon):
    """One item of an agent batch (POST /agents/{id}/execute/batch): a child of the batch execution."""

    type = serializers.ChoiceField(choices=[query.DetailType.BATCH_ITEM])
    agentId = serializers.UUIDField(allow_null=True)
    agentVersionId = serializers.UUIDField(allow_null=True)
    versionNumber = serializers.IntegerField(allow_null=True)
    batchId = serializers.UUIDField(allow_null=True, help_text="The batch execution (= parentId)")
    key = serializers.CharField(help_text="The item's key in the batch request")


DETAIL = PolymorphicProxySerializer(
    component_name="ExecutionDetail",
    serializers={
        query.DetailType.AGENT: ExecutionDetailAgentSerializer,
        query.DetailType.SKILL: ExecutionDetailSkillSerializer,
        query.DetailType.BATCH_ITEM: ExecutionDetailBatchItemSerializer,
    },
    resource_type_field_name="type",
    help_text="The execution detail containing type-specific information, told apart by `type`: `agent`, "
    "`skill` or `batch_item`.",
)


class ExecutionSerializer(serializers.Serializer):
    createdAt = serializers.DateTimeField()
    id = serializers.UUIDField()
    updatedAt = serializers.DateTimeField()
    creditsUsed = serializers.FloatField(help_text="The total number of credits used by this execution.")
    detail = DETAIL
    endedAt = serializers.DateTimeField(allow_null=True, help_text="When this execution ended.")
    isAgentic = serializers.BooleanField(help_text="Whether this execution is agentic (an agent's execution).")
    isPurged = serializers.BooleanField(help_text="Whether this execution has been purged.")
    parentId = serializers.UUIDField(allow_null=True, help_text="The parent execution ID of this execution.")
    responderId = serializers.CharField(help_text="The responder ID of this execution: the agent's or the skill's id.")
    startedAt = serializers.DateTimeField(
        help_text="When this execution started (while it is still queued: when it was created)."
    )
    status = serializers.ChoiceField(choices=query.STATUSES, help_text=STATUS_DESCRIPTION)
    workspaceId = serializers.CharField(help_text="The workspace ID of this execution.")


@extend_schema_field({"type": "array", "items": {"$ref": "#/components/schemas/ExecutionNesting"}})
class _ChildrenField(serializers.ListField):
    pass


class ExecutionNestingSerializer(ExecutionSerializer):
    children = _ChildrenField(
        help_text="Its child executions (sub-executions, batch items), oldest first, each with its own `children`."
    )


AUTHORIZATION = OpenApiParameter(
    "authorization",
    str,
    OpenApiParameter.HEADER,
    description="The API key (`Authorization: <key>` or `Bearer <key>`; `X-API-Key` works too).",
)
ID = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="A UUID v4 string that identifies an entity (`execution:<uuid>` works too).",
)
ERROR = OpenApiResponse(description='`{"error": {"code", "message", "field"}}`')
NOT_FOUND = OpenApiResponse(
    description="Not an execution this key may read (another workspace's, or another end user's): `not_found`."
)


def _page_header(name, description):
    return OpenApiParameter(name, int, OpenApiParameter.HEADER, response=[200], description=description)


# --- views ------------------------------------------------------------------------------------------


class ExecutionListView(APIView):
    @extend_schema(
        operation_id="executions_api_list",
        tags=["executions-api"],
        summary="Retrieves multiple executions",
        description="The workspace's executions (an end-user key: its own), newest first. `pageNumber` >= 1 "
        "(default 1; past the last page: an empty array), `pageSize` 1-100 (default 10); other values are a 400 "
        "(`invalid_page_number`, `invalid_page_size`), never clamped. `responderIds`: agents' or skills' ids, as "
        "one UUID, repeated (`responderIds=a&responderIds=b`) or comma-separated; a value that is not a UUID is a "
        "400 `invalid_responder_ids`. The body is the array of executions; the headers give the total "
        "(`X-Total-Count`), the number of pages (`X-Total-Pages`), the page (`X-Page-Number`, `X-Page-Size`) and "
        "`Link` (first, prev, next, last).",
        parameters=[
            OpenApiParameter("pageNumber", int, description="The page number (min 1).", default=1),
            OpenApiParameter("pageSize", int, description="The page size (1 to 100).", default=10),
            OpenApiParameter(
                "responderIds",
                {"type": "array", "items": {"type": "string", "format": "uuid"}},
                explode=True,
                default=[],
                description="Agents' or skills' ids: one UUID, repeated, or comma-separated.",
            ),
            AUTHORIZATION,
            _page_header("X-Total-Count", "How many executions match."),
            _page_header("X-Total-Pages", "How many pages of pageSize there are."),
            _page_header("X-Page-Number", "This page."),
            _page_header("X-Page-Size", "The page size."),
            OpenApiParameter(
                "Link",
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description='RFC 8288 links: `<...>; rel="next"`, `prev`, `first`, `last`.',
            ),
        ],
        responses={200: ExecutionSerializer(many=True), 400: ERROR, 401: ERROR},
    )
    def get(self, request):
        page = query.list_page(request.user, request.query_params)
        response = Response([query.execution_json(execution) for execution in page.items])
        response["X-Total-Count"] = str(page.total)
        response["X-Total-Pages"] = str(page.pages)
        response["X-Page-Number"] = str(page.page_number)
        response["X-Page-Size"] = str(page.page_size)
        links = _links(request, page)
        if links:
            response["Link"] = links
        return response


def _links(request, page) -> str:
    base = request.build_absolute_uri(request.path)

    def url(number):
        params = [
            (key, value) for key, values in request.query_params.lists() if key != "pageNumber" for value in values
        ]
        return f"{base}?{urlencode([*params, ('pageNumber', number)])}"

    links = []
    if page.pages:
        links.append(f'<{url(1)}>; rel="first"')
        if page.page_number > 1:
            links.append(f'<{url(min(page.page_number - 1, page.pages))}>; rel="prev"')
        if page.page_number < page.pages:
            links.append(f'<{url(page.page_number + 1)}>; rel="next"')
        links.append(f'<{url(page.pages)}>; rel="last"')
    return ", ".join(links)


class ExecutionNestingsView(APIView):
    @extend_schema(
        operation_id="executions_api_nestings",
        tags=["executions-api"],
        summary="Retrieves an execution with its children",
        description="By `executionId`, or by `chatMessageId` (the chat message an execution was recorded for; "
        "chat-dispatched skills record the agent execution's id, `execution:<uuid>`, and either form matches). "
        "When several executions were recorded for one chat message (an agent turn that called several skills), "
        "the answer is the execution they share as parent, with all of them among its children; unrelated ones "
        "are a 409 `ambiguous_chat_message`. Exactly one of the two parameters (400 otherwise). Children are "
        f"nested recursively under `children`, oldest first, up to {query.MAX_NESTING_DEPTH} levels, loaded in "
        "one query.",
        parameters=[
            OpenApiParameter(
                "executionId", OpenApiTypes.UUID, description="A UUID v4 string that identifies an entity."
            ),
            OpenApiParameter("chatMessageId", str, description="A chat message's id (a UUID, or `execution:<uuid>`)."),
            AUTHORIZATION,
        ],
        responses={200: ExecutionNestingSerializer, 400: ERROR, 401: ERROR, 404: NOT_FOUND, 409: ERROR},
    )
    def get(self, request):
        return Response(query.nesting(request.user, request.query_params))


class ExecutionView(APIView):
    @extend_schema(
        operation_id="executions_api_get",
        tags=["executions-api"],
        summary="Retrieves an execution",
        parameters=[ID, AUTHORIZATION],
        responses={200: ExecutionSerializer, 401: ERROR, 404: NOT_FOUND},
    )
    def get(self, request, id):  # noqa: A002 (the spec names the path parameter `id`)
        return Response(query.execution_json(query.get_execution(request.user, id)))


class ExecutionPurgeView(APIView):
    @extend_schema(
        operation_id="executions_api_purge",
        tags=["executions-api"],
        summary="Purges an execution",
        description="Erases a finished execution's inputs, outputs, error, events, artifacts, workspace archive "
        "and generated files; the row stays with `isPurged: true`, its status, timestamps, usage and credits "
        "intact. Workspace keys only (an end-user key: 403 `forbidden`). A queued, running or suspended "
        "execution: 409 `execution_not_finished`. Purging a purged execution answers it again. Its children are "
        "executions of their own, purged separately. A workspace's `execution_retention_days` purges finished "
        "executions automatically.",
        request=None,
        parameters=[ID, AUTHORIZATION],
        responses={200: ExecutionSerializer, 401: ERROR, 403: ERROR, 404: NOT_FOUND, 409: ERROR},
        examples=[
            OpenApiExample(
                "Not finished",
                response_only=True,
                status_codes=["409"],
                value={
                    "error": {
                        "code": "execution_not_finished",
                        "message": "Only a finished execution can be purged; this one is running.",
                    }
                },
            )
        ],
    )
    def post(self, request, id):  # noqa: A002
        if request.user.api_key.kind != ApiKeyKind.WORKSPACE:
            raise ApiError(403, "forbidden", "Only a workspace key can purge executions.")
        execution = query.get_execution(request.user, id)
        purged = purge.purge_execution(execution)
        return Response(query.execution_json(query.get_execution(request.user, str(purged.id))))
