"""The agents API's non-execution endpoints."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.credits import account_for
from agents.credit_rules import quote
from agents.selectors import get_live_agent
from api.http.schemas import Schema, data_envelope, parse, render


class PreviewCreditsRule(Schema):
    name: str
    cost: float


class PreviewCreditsView(APIView):
    class Input(Schema):
        inputs: dict[str, Any] = Field(default_factory=dict, description="The variables an execution would get")
        attachments: list[Any] = Field(default_factory=list, description="The attachments it would get")

    class Output(Schema):
        agent_id: str
        base_cost: float
        rules: list[PreviewCreditsRule] = Field(description="The agent's credit rules and what each adds")
        usage_hold: float = Field(description="Held for the token allowance, settled on the actual usage")
        total: float
        balance: float = Field(description="The caller's credit balance")

    @extend_schema(
        summary="Preview an execution's credits",
        description="The credits an execution with these inputs would hold: base cost plus the breakdown of the "
        "agent's rules, and the usage part held for its token allowance. No execution is created.",
        request=Input,
        responses={200: data_envelope(Output), 409: OpenApiResponse(description="`agent_not_published`")},
    )
    def post(self, request, agent_id):
        agent = get_live_agent(request.user.workspace, agent_id)
        # a body that is not an object is no inputs; of a form's QueryDict, the last values
        body = parse(self.Input, dict(request.data.items()) if isinstance(request.data, dict) else {})
        estimate = quote(agent.credit_rules, {"variables": body.inputs, "attachments": body.attachments})
        data = {
            "agent_id": f"agent:{agent.id}",
            **estimate,
            "balance": account_for(request.user.workspace, request.user.principal).balance,
        }
        return Response({"data": render(self.Output, data)})
