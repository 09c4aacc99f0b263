"""The page shapes of the HTTP surfaces, one DRF pagination class each, so a surface's parameters,
limits, errors and page metadata are written once:

- `LimitOffsetPagination`: `limit` / `offset`, the body `{"data": [...], "pagination": {"limit",
  "offset", "total"}}` (the skills API's executions, a conversation's messages).
- `UncountedLimitOffsetPagination`: `limit` / `offset`, the body `{"data": [...]}`, no count
  (personal files).
- `PageNumberHeaderPagination`: `pageNumber` / `pageSize`, the bare array as body and the page's
  metadata in X-Total-Count, X-Total-Pages, X-Page-Number, X-Page-Size and Link (the executions
  query API).

A parameter out of range is a 400 naming it, never clamped (core/query_params.py). Each class also
gives drf-spectacular its parameters and page schema (`get_schema_operation_parameters`,
`get_paginated_response_schema`).
"""

import math
from urllib.parse import urlencode

from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from core.query_params import int_query_param


def _integer_parameter(name: str, default: int, minimum: int, maximum: int | None, description: str) -> dict:
    schema = {"type": "integer", "minimum": minimum, "default": default}
    if maximum is not None:
        schema["maximum"] = maximum
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


class LimitOffsetPagination(BasePagination):
    default_limit = 50
    max_limit = 200
    error_code: str | None = None  # None: `invalid_limit` / `invalid_offset`

    def paginate_queryset(self, queryset, request, view=None) -> list:
        self.limit = int_query_param(
            request.query_params, "limit", self.default_limit, 1, self.max_limit, code=self.error_code
        )
        self.offset = int_query_param(request.query_params, "offset", 0, 0, code=self.error_code)
        page = list(queryset[self.offset : self.offset + self.limit])
        self.total = self.count(queryset)
        return page

    def count(self, queryset) -> int | None:
        return queryset.count()

    def get_paginated_response(self, data) -> Response:
        return Response({"data": data, "pagination": {"limit": self.limit, "offset": self.offset, "total": self.total}})

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            _integer_parameter(
                "limit",
                self.default_limit,
                1,
                self.max_limit,
                f"1 to {self.max_limit} (default {self.default_limit})",
            ),
            _integer_parameter("offset", 0, 0, None, "From 0 (default 0)"),
        ]

    def get_paginated_response_schema(self, schema: dict) -> dict:
        integer = {"type": "integer"}
        return {
            "type": "object",
            "required": ["data", "pagination"],
            "properties": {
                "data": schema,
                "pagination": {
                    "type": "object",
                    "required": ["limit", "offset", "total"],
                    "properties": {"limit": integer, "offset": integer, "total": integer},
                },
            },
        }


class UncountedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 100
    error_code = "invalid_request"

    def count(self, queryset) -> None:
        return None

    def get_paginated_response(self, data) -> Response:
        return Response({"data": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {"type": "object", "required": ["data"], "properties": {"data": schema}}


class PageNumberHeaderPagination(BasePagination):
    """Past the last page: an empty array (no query for the rows)."""

    default_page_size = 10
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None) -> list:
        self.request = request
        self.page_number = int_query_param(request.query_params, "pageNumber", 1, 1)
        self.page_size = int_query_param(
            request.query_params, "pageSize", self.default_page_size, 1, self.max_page_size
        )
        self.total = queryset.count()
        self.pages = math.ceil(self.total / self.page_size)
        offset = (self.page_number - 1) * self.page_size
        return list(queryset[offset : offset + self.page_size]) if offset < self.total else []

    def get_paginated_response(self, data) -> Response:
        headers = {
            "X-Total-Count": str(self.total),
            "X-Total-Pages": str(self.pages),
            "X-Page-Number": str(self.page_number),
            "X-Page-Size": str(self.page_size),
        }
        links = self.links()
        if links:
            headers["Link"] = links
        return Response(data, headers=headers)

    def links(self) -> str:
        """RFC 8288: first, prev, next and last, with the request's other parameters kept."""
        if not self.pages:
            return ""
        base = self.request.build_absolute_uri(self.request.path)
        others = [
            (key, value) for key, values in self.request.query_params.lists() if key != "pageNumber" for value in values
        ]

        def link(number: int, rel: str) -> str:
            return f'<{base}?{urlencode([*others, ("pageNumber", number)])}>; rel="{rel}"'

        links = [link(1, "first")]
        if self.page_number > 1:
            links.append(link(min(self.page_number - 1, self.pages), "prev"))
        if self.page_number < self.pages:
            links.append(link(self.page_number + 1, "next"))
        links.append(link(self.pages, "last"))
        return ", ".join(links)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            _integer_parameter("pageNumber", 1, 1, None, "The page number (min 1)."),
            _integer_parameter(
                "pageSize", self.default_page_size, 1, self.max_page_size, f"The page size (1 to {self.max_page_size})."
            ),
        ]

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return schema
