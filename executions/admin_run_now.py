"""The console's "run now" forms (issue 13, item 4): an operator starts an execution of an agent
or a skill from its page, through the same start services as the APIs, with the source
`standalone` (started on its own: not by a chat, a batch, a parent, nor an API client).

The operator has no key: the execution belongs to the agent's workspace with no principal (its
credits, if any, are the workspace's), and the admin log records who started it.
"""

import json
from dataclasses import dataclass

from django import forms

from accounts.models import Workspace
from core.errors import ApiError
from executions.agent_executions import start_agent_execution
from executions.models import Execution, ExecutionSource
from executions.skill_executions import start_skill_execution

MAX_MESSAGE_CHARS = 65_536  # as the agents API (api/agents/schemas.py)
MAX_VARIABLES_BYTES = 16 * 1024


@dataclass
class Operator:
    """The caller the start services need: a workspace, and no principal."""

    workspace: Workspace
    principal: None = None


def _json_object(raw: str, field: str, max_bytes: int | None = None) -> dict:
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise forms.ValidationError(f"{field} is not JSON: {exc}")
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{field} must be a JSON object.")
    if max_bytes is not None and len(json.dumps(value, separators=(",", ":")).encode()) > max_bytes:
        raise forms.ValidationError(f"{field} is over {max_bytes} bytes.")
    return value


class AgentRunForm(forms.Form):
    message = forms.CharField(required=False, max_length=MAX_MESSAGE_CHARS, widget=forms.Textarea(attrs={"rows": 3}))
    variables = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="A JSON object (optional)"
    )

    def __init__(self, *args, agent, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent = agent

    def clean_variables(self):
        return _json_object(self.cleaned_data["variables"], "variables", MAX_VARIABLES_BYTES)

    def clean(self):
        cleaned = super().clean()
        if self.agent.live_version is None:
            raise forms.ValidationError("The agent has no published version.")
        if self.agent.requires_user_message and not cleaned.get("message"):
            self.add_error("message", "This agent requires a message.")
        return cleaned

    def inputs(self) -> dict:
        inputs = {"message": self.cleaned_data["message"] or None, "variables": self.cleaned_data["variables"] or None}
        return {key: value for key, value in inputs.items() if value is not None}


class SkillRunForm(forms.Form):
    inputs = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), initial="{}", help_text="A JSON object"
    )
    model = forms.CharField(required=False, max_length=64, help_text="A model alias of the workspace (optional)")

    def __init__(self, *args, skill, **kwargs):
        super().__init__(*args, **kwargs)
        self.skill = skill

    def clean_inputs(self):
        return _json_object(self.cleaned_data["inputs"], "inputs")

    def clean(self):
        cleaned = super().clean()
        if self.skill.live_version is None:
            raise forms.ValidationError("The skill has no published version.")
        return cleaned


def run_agent_now(form: AgentRunForm) -> Execution:
    """Raises ApiError as the API would answer it (402 insufficient_credits, ...)."""
    agent = form.agent
    return start_agent_execution(
        caller=Operator(agent.workspace),
        agent=agent,
        inputs=form.inputs(),
        idempotency_key=None,
        fingerprint=None,
        source=ExecutionSource.STANDALONE,
    )


def run_skill_now(form: SkillRunForm) -> Execution:
    """Raises ApiError for inputs its schema refuses (422 invalid_inputs) or a model not allowed."""
    skill = form.skill
    return start_skill_execution(
        caller=Operator(skill.workspace),
        space=skill.workspace,
        skill=skill,
        inputs=form.cleaned_data["inputs"],
        file_source_ids=[],
        model=form.cleaned_data["model"] or None,
        source=ExecutionSource.STANDALONE,
    )


def error_text(exc: ApiError) -> str:
    errors = exc.extra.get("errors")
    details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors or [])
    return f"{exc.code}: {exc.message}" + (f" ({details})" if details else "")
