"""The Executions query API (spec/executions-api.txt): `/api/v1/executions...`, camelCase JSON.

The spec's bodies are bare: an execution object, or for the list an array of them (the page's
metadata is in the X-Total-Count, X-Total-Pages, X-Page-Number, X-Page-Size and Link headers).
Errors use the platform's envelope `{"error": {"code", "message", "field"}}`. Every route is scoped
to what the key may read (workspace keys: the workspace's executions; end-user keys: their own);
anything else is a 404.
"""

import uuid
from typing import Annotated

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import BeforeValidator, Field, model_validator
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from api.http.schemas import Schema, invalid, parse_query, render
from api.query import selectors as query
from api.query.schemas import Execution, ExecutionNesting
from core.ids import parse_prefixed_id
from core.pagination import PageNumberHeaderPagination
from core.permissions import IsWorkspaceKey
from executions import purge

MAX_RESPONDER_IDS = 100
MAX_CHAT_MESSAGE_ID_LENGTH = 128


def _responder_ids(values: list[str]) -> list[str]:
    """`responderIds=a&responderIds=b`, `responderIds=a,b` or `responderIds[]=a`, as one list."""
    ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if len(ids) > MAX_RESPONDER_IDS:
        raise invalid("invalid_responder_ids", f"At most {MAX_RESPONDER_IDS} responderIds.")
    for value in ids:
        try:
            uuid.UUID(value)
        except ValueError:
            raise invalid("invalid_responder_ids", f"responderIds must be UUIDs; {value[:64]!r} is not.")
    return ids


def _stripped(value):
    return (value.strip() or None) if isinstance(value, str) else value


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
    pagination_class = PageNumberHeaderPagination

    class Input(Schema):
        responderIds: Annotated[list[uuid.UUID], BeforeValidator(_responder_ids)] = Field(
            [], description="Agents' or skills' ids: one UUID, repeated, or comma-separated."
        )

    Output = Execution

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
            Input,
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
        responses={200: Output, 400: ERROR, 401: ERROR},
    )
    def get(self, request):
        filters = parse_query(self.Input, request.query_params)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            query.list_executions(request.user, responder_ids=filters.responderIds), request, self
        )
        return paginator.get_paginated_response([render(self.Output, execution) for execution in page])


class ExecutionNestingsView(APIView):
    class Input(Schema):
        executionId: Annotated[str | None, BeforeValidator(_stripped)] = Field(
            None, description="A UUID v4 string that identifies an entity.", json_schema_extra={"format": "uuid"}
        )
        chatMessageId: Annotated[str | None, BeforeValidator(_stripped)] = Field(
            None,
            description="A chat message's id (a UUID, or `execution:<uuid>`).",
            json_schema_extra={"maxLength": MAX_CHAT_MESSAGE_ID_LENGTH},
        )

        @model_validator(mode="after")
        def _exactly_one(self):
            if self.executionId and self.chatMessageId:
                raise invalid(
                    "conflicting_parameters", "Give executionId or chatMessageId, not both.", field="chatMessageId"
                )
            if self.executionId:
                if self.execution_uuid is None:
                    raise invalid("invalid_execution_id", "executionId must be a UUID.", field="executionId")
            elif self.chatMessageId:
                if len(self.chatMessageId) > MAX_CHAT_MESSAGE_ID_LENGTH:
                    raise invalid(
                        "invalid_chat_message_id",
                        f"chatMessageId is at most {MAX_CHAT_MESSAGE_ID_LENGTH} characters.",
                        field="chatMessageId",
                    )
            else:
                raise invalid(
                    "execution_id_or_chat_message_id_required",
                    "Give executionId or chatMessageId.",
                    field="executionId",
                )
            return self

        @property
        def execution_uuid(self) -> uuid.UUID | None:
            return parse_prefixed_id(self.executionId, "execution") if self.executionId else None

    Output = ExecutionNesting

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
        parameters=[Input, AUTHORIZATION],
        responses={200: Output, 400: ERROR, 401: ERROR, 404: NOT_FOUND, 409: ERROR},
    )
    def get(self, request):
        params = parse_query(self.Input, request.query_params)
        if params.execution_uuid is not None:
            root_id = params.execution_uuid
        else:
            root_id = query.nesting_root_for_chat_message(request.user, params.chatMessageId)
        return Response(render(self.Output, query.execution_tree(request.user, root_id)))


class ExecutionView(APIView):
    Output = Execution

    @extend_schema(
        operation_id="executions_api_get",
        tags=["executions-api"],
        summary="Retrieves an execution",
        parameters=[ID, AUTHORIZATION],
        responses={200: Output, 401: ERROR, 404: NOT_FOUND},
    )
    def get(self, request, id):  # noqa: A002 (the spec names the path parameter `id`)
        return Response(render(self.Output, query.get_execution(request.user, id)))


class ExecutionPurgeView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = "Only a workspace key can purge executions."
    Output = Execution

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
        responses={200: Output, 401: ERROR, 403: ERROR, 404: NOT_FOUND, 409: ERROR},
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
        purged = purge.purge_execution(query.get_execution(request.user, id))
        return Response(render(self.Output, query.get_execution(request.user, str(purged.id))))
