"""Bad input on the execute endpoints: a 4xx with a stable error code and the field."""

import pytest

from tests.helpers import auth

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "message_required"),
        ({"message": ""}, "invalid_message"),
        ({"message": "x" * 65_537}, "invalid_message"),
        ({"message": 42}, "invalid_message"),
    ],
)
@pytest.mark.parametrize("route", ["execute", "execute/stream"])
def test_message_rules(client, tenant, agent, body, code, route):
    response = client.post(
        f"/agents/{agent.id}/{route}", data=body, content_type="application/json", headers=auth(tenant)
    )
    assert response.status_code == 400
    assert response.json()["error"] == {**response.json()["error"], "code": code, "field": "message"}


def test_message_of_the_maximum_length_is_accepted(client, tenant, agent):
    from executions.models import Execution

    response = client.post(
        f"/agents/{agent.id}/execute/stream",
        data={"message": "x" * 65_536},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert response.status_code == 200
    assert Execution.objects.get().inputs["message"] == "x" * 65_536


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_body_must_be_a_json_object(client, tenant, agent, raw):
    response = client.post(
        f"/agents/{agent.id}/execute", data=raw, content_type="application/json", headers=auth(tenant)
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid_json", "invalid_request"}


def test_unpublished_agent_is_409(client, tenant):
    from agents.models import Agent

    agent = Agent.objects.create(workspace=tenant.workspace, name="draft")
    response = client.post(
        f"/agents/{agent.id}/execute", data={"message": "hi"}, content_type="application/json", headers=auth(tenant)
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "agent_not_published"


def test_agent_ids_may_carry_the_agent_prefix(client, tenant, agent):
    response = client.post(
        f"/agents/agent:{agent.id}/execute/stream",
        data={"message": "hi"},
        content_type="application/json",
        headers=auth(tenant),
    )
    assert response.status_code == 200


def test_get_on_a_post_route_is_405(client, tenant, agent):
    response = client.get(f"/agents/{agent.id}/execute", headers=auth(tenant))
    assert response.status_code == 405
