"""Schemathesis over /api/schema/ against the live server (issue 11, item 8): every operation,
authenticated with a workspace key of the tenant, answers no 5xx, only the status codes and content
types it documents, and bodies that match its response schemas.

Generated ids name nothing, so every case would be a 404: a case whose path parameters were
generated valid gets the ids of real rows instead (an agent, a finished execution, a skill, ...), so
the operations' own answers are checked too; cases generated invalid keep their values."""

import json

import httpx
import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import SkillFactory
from tests.helpers import ANSWERING_SKILL_MANIFEST, auth, event_validator, execution_uuid

pytestmark = pytest.mark.drill

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The document is read at collection (its operations are the test's parameters), in process: the
# live server starts later, in a fixture. test_the_live_server_serves_this_document checks it is the same.
DOCUMENT = Client(HTTP_HOST="localhost").get("/api/schema/", HTTP_ACCEPT="application/json").json()
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            # an SSE answer is read to its end: the agent below answers at once, and an execution's stream
            # ends at its final event (or at a suspension)
            "request-timeout": 30,
            # the tenant's workspace key is sent with every call (below), never a generated one
            "generation": {"max-examples": 25, "with-security-parameters": False},
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


@pytest.fixture
def real_ids(live, tenant, make_agent):
    """Path parameter values that name the tenant's rows."""
    agent = make_agent(tenant.workspace, reply="ok")
    skill = SkillFactory(workspace=tenant.workspace, slug="report", manifest=ANSWERING_SKILL_MANIFEST)
    answer = httpx.post(
        f"{live}/agents/agent:{agent.id}/execute", json={"message": "hi"}, headers=auth(tenant, "workspace"), timeout=30
    )
    execution_id = answer.json()["data"]["execution_id"]
    return {
        "agent_id": f"agent:{agent.id}",
        "space_id": f"workspace:{tenant.workspace.id}",
        "slug": skill.slug,
        "execution_id": execution_id,
        "id": execution_uuid(execution_id),
    }


def test_the_live_server_serves_this_document(live):
    assert httpx.get(f"{live}/api/schema/", headers={"Accept": "application/json"}).json() == DOCUMENT


def test_every_operation_documents_the_errors_every_route_can_answer():
    """The status codes raised before a view runs (limits, authentication, routing) or by a dependency
    that is down, documented once for all operations (api/http/openapi.py, document_common_errors)."""
    for path, path_item in DOCUMENT["paths"].items():
        for method, operation in path_item.items():
            expected = {"400", "401", "403", "404", "503"} | ({"413", "415"} if "requestBody" in operation else set())
            assert expected <= set(operation["responses"]), (method, path)
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            assert "Retry-After" in operation["responses"]["503"]["headers"]


EVENT_VALIDATOR = event_validator(DOCUMENT)


def check_event_data(response) -> None:
    """A text/event-stream answer's frames are validated by schemathesis (ExecutionEventFrame); the
    JSON in their `data` against ExecutionEvent here, as OpenAPI 3.0 cannot say it."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return
    for line in response.text.splitlines():
        if line.startswith("data: "):
            EVENT_VALIDATOR.validate(json.loads(line.removeprefix("data: ")))


@schema.parametrize()
# 25 cases per phase and operation (~40 s for the module on 2 cores); the same cases on every run, so
# that a failure in CI reproduces (schemathesis' coverage phase adds its negative cases to them)
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_document(case, live, tenant, real_ids):
    path = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
    if path is not None and path.mode == GenerationMode.POSITIVE:
        case.path_parameters.update({name: real_ids[name] for name in case.path_parameters if name in real_ids})
    response = case.call(base_url=live, headers=auth(tenant, "workspace"))
    case.validate_response(response, checks=CHECKS)
    check_event_data(response)
