"""The workspace's agents, for a caller that has to pick one (the front door at `/`, a client's menu).

The spec names the execute routes of an agent by id only; a list is what its users would expect
before them. Any key of the workspace may list them: an end-user key can execute every one."""

from datetime import datetime

from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import Field, model_validator
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.selectors import accepts_client_tools, published_agents
from api.http.schemas import Schema, render


class AgentOutput(Schema):
    id: str = Field(examples=["agent:0bve9rxq"])
    name: str
    requires_user_message: bool = Field(description="An execute request must carry a `message`")
    accepts_client_tools: bool = Field(description="The request's `client_tools` reach the model")
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_agent(cls, agent):
        if not isinstance(agent, Agent):
            return agent
        return {
            "id": f"agent:{agent.id}",
            "name": agent.name,
            "requires_user_message": agent.requires_user_message,
            "accepts_client_tools": accepts_client_tools(agent.live_version.workflow),
            "created_at": agent.created_at,
        }


class AgentsView(APIView):
    class Output(Schema):
        data: list[AgentOutput] = Field(description="The workspace's published agents, by name")

    @extend_schema(
        operation_id="agents_list",
        summary="List the workspace's agents",
        # no parameters, but any route refuses a query parameter holding a NUL
        responses={200: Output, 400: OpenApiResponse(description="`invalid_query_parameter`")},
    )
    def get(self, request):
        return Response(render(self.Output, {"data": published_agents(request.user.workspace)}))
