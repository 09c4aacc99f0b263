"""core/pagination.py at its boundaries, through a route of each page shape: the largest page is
served, one more is a 400 naming the parameter (the executions query API's pageSize and the personal
files' limit have their own tests)."""

import pytest

from conversations.models import Conversation, Message
from tests.helpers import auth

pytestmark = pytest.mark.django_db


def error_of(response) -> dict:
    return response.json()["error"]


def test_limit_offset_pagination_of_skill_executions(client, tenant):
    url = f"/v1/spaces/{tenant.workspace.id}/skills/executions"
    largest = client.get(url, {"limit": 200, "offset": 0}, headers=auth(tenant))
    assert largest.status_code == 200
    assert largest.json() == {"data": [], "pagination": {"limit": 200, "offset": 0, "total": 0}}
    for params, field in (({"limit": 201}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset")):
        refused = client.get(url, params, headers=auth(tenant))
        assert refused.status_code == 400
        assert (error_of(refused)["code"], error_of(refused)["field"]) == (f"invalid_{field}", field)


def test_limit_offset_pagination_of_conversation_messages(client, tenant, make_agent):
    conversation = Conversation.objects.create(
        workspace=tenant.workspace, principal=tenant.end_user_key.api_key.principal, agent=make_agent(tenant.workspace)
    )
    Message.objects.bulk_create(Message(conversation=conversation, role="user", content=str(n)) for n in range(3))
    url = f"/my/conversations/{conversation.public_id}/messages"
    largest = client.get(url, {"limit": 200, "offset": 1}, headers=auth(tenant)).json()
    assert [m["content"] for m in largest["data"]] == ["1", "2"]
    assert largest["pagination"] == {"limit": 200, "offset": 1, "total": 3}
    refused = client.get(url, {"limit": 201}, headers=auth(tenant))
    assert refused.status_code == 400 and error_of(refused)["code"] == "invalid_limit"
    twice = client.get(f"{url}?limit=1&limit=2", headers=auth(tenant))
    assert twice.status_code == 400 and error_of(twice)["field"] == "limit"


def test_page_number_header_pagination_links_keep_the_other_parameters(client, tenant):
    response = client.get("/api/v1/executions", {"pageSize": 100, "pageNumber": 3}, headers=auth(tenant))
    assert response.status_code == 200 and response.json() == []
    assert (response["X-Total-Count"], response["X-Total-Pages"], response["X-Page-Size"]) == ("0", "0", "100")
    assert "Link" not in response
    assert client.get("/api/v1/executions", {"pageSize": 101}, headers=auth(tenant)).status_code == 400
