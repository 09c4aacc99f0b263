"""The agents API's non-execution endpoints."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.credits import account_for
from agents.credit_rules import quote
from agents.selectors import get_live_agent
from core.errors import ApiError


class PreviewCreditsView(APIView):
    @extend_schema(
        summary="Preview an execution's credits",
        description="The credits an execution with these inputs would hold: base cost plus the breakdown of the "
        "agent's rules, and the usage part held for its token allowance. No execution is created.",
        request={
            "application/json": {
                "type": "object",
                "properties": {
                    "inputs": {"type": "object", "description": "The variables an execution would get"},
                    "attachments": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
        responses={
            200: OpenApiResponse(
                description='{"data": {"base_cost", "rules": [{"name", "cost"}], "usage_hold", "total", "balance"}}'
            )
        },
    )
    def post(self, request, agent_id):
        agent = get_live_agent(request.user.workspace, agent_id)
        body = request.data if isinstance(request.data, dict) else {}
        variables, attachments = body.get("inputs", {}), body.get("attachments", [])
        if not isinstance(variables, dict):
            raise ApiError(400, "invalid_inputs", "inputs must be an object.", field="inputs")
        if not isinstance(attachments, list):
            raise ApiError(400, "invalid_attachments", "attachments must be a list.", field="attachments")
        estimate = quote(agent.credit_rules, {"variables": variables, "attachments": attachments})
        balance = account_for(request.user.workspace, request.user.principal).balance
        return Response(
            {
                "data": {
                    "agent_id": f"agent:{agent.id}",
                    "base_cost": float(estimate["base_cost"]),
                    "rules": [{"name": rule["name"], "cost": float(rule["cost"])} for rule in estimate["rules"]],
                    "usage_hold": float(estimate["usage_hold"]),
                    "total": float(estimate["total"]),
                    "balance": float(balance),
                }
            }
        )
