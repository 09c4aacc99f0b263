"""POST/GET /schedules and GET/DELETE /schedules/{id}: a workspace's schedules (workspace keys).

The inputs are validated when the schedule is created, as its target's start route would validate
them (an agent's execute body, a skill's inputs schema), so a due run starts with inputs known good.
"""

from datetime import datetime
from typing import Any, Literal

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.selectors import get_live_agent
from api.agents.schemas import ExecuteInput
from api.http.schemas import Schema, data_envelope, parse, render
from core.errors import ApiError
from core.permissions import IsWorkspaceKey
from executions.skill_executions import check_inputs, get_startable_skill
from schedules import selectors, services


class ScheduleError(Schema):
    code: str
    message: str
    at: datetime


class ScheduleOutput(Schema):
    id: str = Field(description="`schedule:<uuid>`")
    agent_id: str | None = Field(description="`agent:<uuid>` when it runs an agent")
    skill: str | None = Field(description="The skill's slug when it runs a skill")
    cron: str
    timezone: str
    inputs: dict[str, Any]
    overlap: Literal["skip", "queue"]
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None = Field(description="The last due time handled")
    last_execution_id: str | None = Field(description="The execution its last started run created")
    last_error: ScheduleError | None = Field(description="Why the last due run did not start, if it did not")
    queued_runs: int = Field(description="Due runs waiting for the previous execution to end (overlap=queue)")
    skipped_runs: int = Field(description="Due runs dropped because the previous execution had not ended")
    created_at: datetime


# The agents API's workspace header: optional, and when sent it must name the key's workspace.
WORKSPACE = OpenApiParameter(
    "X-Workspace-Id",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="`workspace:<id>`; must be the key's workspace (403 `workspace_mismatch`).",
)


def _output(schedule) -> dict:
    execution = schedule.last_execution_id
    return {
        "id": schedule.public_id,
        "agent_id": f"agent:{schedule.agent_id}" if schedule.agent_id else None,
        "skill": schedule.skill.slug if schedule.skill_id else None,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "inputs": schedule.inputs,
        "overlap": schedule.overlap,
        "enabled": schedule.enabled,
        "next_run_at": schedule.next_run_at,
        "last_run_at": schedule.last_run_at,
        # the agents API prefixes execution ids, the skills API does not (Execution.public_id)
        "last_execution_id": (f"execution:{execution}" if schedule.agent_id else str(execution)) if execution else None,
        "last_error": schedule.last_error,
        "queued_runs": schedule.queued_runs,
        "skipped_runs": schedule.skipped_runs,
        "created_at": schedule.created_at,
    }


def _inputs_at(exc: ApiError) -> ApiError:
    """An agent input's error names its path under `inputs` (the execute body's own names it at the top)."""
    exc.field = f"inputs.{exc.field}" if exc.field else "inputs"
    return exc


class SchedulesView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = "Schedules are managed with a workspace (wak_) key."

    class Input(Schema):
        agent_id: str | None = Field(None, max_length=200, description="The agent to run (`agent:<uuid>`)")
        skill: str | None = Field(None, max_length=200, description="Or the skill to run (its slug)")
        cron: str = Field(
            max_length=200,
            description="Five fields (minute hour day-of-month month day-of-week), or @hourly, @daily, @weekly, "
            "@monthly, @yearly",
            examples=["*/15 * * * *"],
        )
        timezone: str = Field("UTC", max_length=64, description="The IANA zone the expression is read in")
        inputs: dict[str, Any] = Field(
            default_factory=dict,
            description="For an agent: the body of POST /agents/{id}/execute (message, variables, ...); for a "
            "skill: its inputs",
        )
        overlap: Literal["skip", "queue"] | None = Field(
            None,
            description="A due run while the previous execution has not ended: skip it, or queue it to start when "
            "that one ends. Default: SCHEDULE_OVERLAP_DEFAULT",
        )
        enabled: bool = True

    class ListOutput(Schema):
        data: list[ScheduleOutput]

    @extend_schema(
        summary="Schedule an agent or a skill",
        description="Starts an execution (`source: schedule`) of the agent or skill at every due time of the cron "
        "expression, with these inputs, as the key's principal. Workspace keys only.",
        request=Input,
        parameters=[WORKSPACE],
        responses={
            201: data_envelope(ScheduleOutput),
            400: OpenApiResponse(description="`invalid_cron`, `invalid_timezone`, `target_required`, ..."),
            404: OpenApiResponse(description="No such agent or skill in the workspace"),
            409: OpenApiResponse(description="`agent_not_published`, `skill_not_published`, `too_many_schedules`"),
            422: OpenApiResponse(description="`invalid_inputs`: the skill's inputs schema refuses them"),
        },
    )
    def post(self, request):
        caller = request.user
        body = parse(self.Input, request.data)
        if (body.agent_id is None) == (body.skill is None):
            code = "target_required" if body.agent_id is None else "invalid_target"
            raise ApiError(400, code, "Give exactly one of agent_id and skill.", field="agent_id")
        services.check_schedule(cron=body.cron, timezone_name=body.timezone)
        agent = skill = None
        if body.agent_id is not None:
            agent = get_live_agent(caller.workspace, body.agent_id)
            try:
                inputs = parse(ExecuteInput, body.inputs, agent=agent, caller=caller).inputs()
            except ApiError as exc:
                raise _inputs_at(exc)
        else:
            skill = get_startable_skill(caller.workspace, body.skill)
            inputs = body.inputs
            check_inputs(skill, inputs)  # its errors name `inputs.<field>` already
        schedule = services.create_schedule(
            workspace=caller.workspace,
            principal=caller.principal,
            agent=agent,
            skill=skill,
            cron=body.cron,
            timezone_name=body.timezone,
            inputs=inputs,
            overlap=body.overlap,
            enabled=body.enabled,
        )
        return Response({"data": render(ScheduleOutput, _output(schedule))}, status=201)

    @extend_schema(summary="The workspace's schedules", parameters=[WORKSPACE], responses={200: ListOutput})
    def get(self, request):
        schedules = selectors.workspace_schedules(request.user.workspace)
        return Response(render(self.ListOutput, {"data": [_output(s) for s in schedules]}))


class ScheduleView(APIView):
    permission_classes = [IsAuthenticated, IsWorkspaceKey]
    workspace_key_message = SchedulesView.workspace_key_message

    @extend_schema(summary="A schedule", parameters=[WORKSPACE], responses={200: data_envelope(ScheduleOutput)})
    def get(self, request, schedule_id):
        schedule = selectors.get_schedule(request.user.workspace, schedule_id)
        return Response({"data": render(ScheduleOutput, _output(schedule))})

    @extend_schema(
        summary="Delete a schedule",
        description="No further run starts; its executions stay.",
        parameters=[WORKSPACE],
        responses={204: None},
    )
    def delete(self, request, schedule_id):
        services.delete_schedule(schedule=selectors.get_schedule(request.user.workspace, schedule_id))
        return Response(status=204)
