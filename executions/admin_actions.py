"""The operator's actions on one execution, each a confirmed POST from its admin page (issue 13).

The interface between the execution page and the actions: the page lists `available_actions()`
as buttons/links; each action's URL is `admin:executions_execution_action` with
(object_id, action name), a GET there shows the confirmation form, the POST acts.
"""

from dataclasses import dataclass

from django.http import Http404
from django.urls import path


@dataclass(frozen=True)
class Action:
    name: str  # the URL segment: cancel, approve, reject, external-event, tool-result, retry, fork, refund, purge
    label: str
    url: str


def available_actions(execution, user) -> list[Action]:
    """The actions this user may take on this execution in its current state."""
    return []


class ExecutionActionsMixin:
    """Adds the action views to ExecutionAdmin."""

    def get_urls(self):
        view = self.admin_site.admin_view(self.execution_action)
        return [
            path("<path:object_id>/actions/<str:action>/", view, name="executions_execution_action"),
            *super().get_urls(),
        ]

    def execution_action(self, request, object_id, action):
        raise Http404("No such action.")
