"""The operator's actions on one execution, each a confirmed POST from its admin page (issue 13).

The interface between the execution page and the actions: the page lists `available_actions()`
as buttons/links; each action's URL is `admin:executions_execution_action` with
(object_id, action name), a GET there shows the confirmation form, the POST acts.

Each action calls the service the API calls (executions/services.py, resumes.py, reruns.py,
refunds.py, purge.py), so the admin and the API keep one set of rules and locks; the operator is
named `admin:<username>` where the execution's log records who acted (the `resumed` event, the
`error` event of a cancel taken at once), and every action is an admin log entry (LogEntry) of
the execution (a retry or a fork also one of the new execution).

Permissions: `executions.change_execution` for what acts on the run (cancel, approve, reject,
external-event, tool-result, retry, fork); refunds move money and purges erase data, so each has
its own permission (`executions.refund_execution`, `executions.purge_execution`). A staff user
without it gets a 403; an action the execution's state does not allow is a 409 page.
"""

import json
from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.credits import charged_and_refunded
from accounts.models import ModelAlias
from core.admin import check_view_permission
from core.errors import ApiError
from core.ids import is_uuid
from executions import purge, refunds, reruns, resumes, services
from executions.checkpoints import Checkpoint, CheckpointError
from executions.models import TERMINAL_STATES, Execution, ExecutionCheckpoint, ExecutionState

CHANGE = "executions.change_execution"
REFUND = "executions.refund_execution"
PURGE = "executions.purge_execution"
MAX_COMMENT_CHARS = 2000  # as the API's approval comment (api/agents/resume_views.py)
MAX_EVENT_NAME_CHARS = 128


@dataclass(frozen=True)
class Action:
    name: str  # the URL segment: cancel, approve, reject, external-event, tool-result, retry, fork, refund, purge
    label: str
    url: str


# --- forms ------------------------------------------------------------------------------------------


def _check_json_size(value):
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.TOOL_RESULT_MAX_BYTES:
        raise forms.ValidationError(f"At most {settings.TOOL_RESULT_MAX_BYTES} bytes of JSON.")
    return value


class ConfirmForm(forms.Form):
    def __init__(self, *args, execution=None, initial_query=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.execution = execution


class CommentForm(ConfirmForm):
    comment = forms.CharField(max_length=MAX_COMMENT_CHARS, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class ExternalEventForm(ConfirmForm):
    event = forms.CharField(max_length=MAX_EVENT_NAME_CHARS)
    payload = forms.JSONField(required=False, help_text="Any JSON value", validators=[_check_json_size])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        expected = _checkpoint(self.execution).expected_event()
        if expected:
            self.fields["event"].initial = expected
            self.fields["event"].help_text = f"The execution waits for {expected!r}."


def _pending_tool_calls(execution) -> list[str]:
    posted = (execution.resume_input or {}).get("tool_results", {})
    return [call_id for call_id in _checkpoint(execution).pending_tool_call_ids() if call_id not in posted]


class ToolResultForm(ConfirmForm):
    tool_call_id = forms.ChoiceField()
    outcome = forms.ChoiceField(choices=[("success", "success"), ("error", "error")])
    result = forms.JSONField(required=False, help_text="Any JSON value", validators=[_check_json_size])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tool_call_id"].choices = [(call_id, call_id) for call_id in _pending_tool_calls(self.execution)]


class ForkForm(ConfirmForm):
    from_seq = forms.IntegerField(
        min_value=0, label="From event", help_text="The fork starts from the latest checkpoint at or before this seq."
    )
    model = forms.ChoiceField(required=False, label="Model alias")

    def __init__(self, *args, initial_query=None, **kwargs):
        super().__init__(*args, **kwargs)
        if initial_query and initial_query.get("from_seq", "").isdigit():
            self.fields["from_seq"].initial = int(initial_query["from_seq"])
        aliases = ModelAlias.objects.filter(workspace_id=self.execution.workspace_id, allowed=True).order_by("alias")
        self.fields["model"].choices = [("", "the execution's own model")] + [
            (alias.alias, f"{alias.alias} ({alias.provider} {alias.model})".strip()) for alias in aliases
        ]


class RefundForm(ConfirmForm):
    amount = forms.DecimalField(max_digits=18, decimal_places=6, min_value=0.000001)
    note = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        charged, _ = charged_and_refunded(self.execution.id)
        self.fields["amount"].initial = charged
        self.fields["amount"].help_text = f"At most the {charged} credits charged; an execution is refunded once."


def _checkpoint(execution) -> Checkpoint:
    try:
        return Checkpoint.from_json(execution.checkpoint)
    except CheckpointError:
        return Checkpoint()


# --- what each action does --------------------------------------------------------------------------


def _by(request) -> str:
    return f"admin:{request.user.get_username()}"


def _cancel(request, execution, data):
    execution = services.do_request_cancel(execution, by=_by(request))
    if execution.state == ExecutionState.CANCELLED:
        return "Cancelled.", None
    return "Cancel requested: the worker stops between steps.", None


def _decide(decision):
    def act(request, execution, data):
        resumes.check_decide_approval(execution, decision, data["comment"], None, by=_by(request))
        return f"Gate {decision}" + (f": {data['comment']}" if data["comment"] else "."), None

    return act


def _external_event(request, execution, data):
    resumes.check_post_external_event(execution, data["event"], data["payload"], by=_by(request))
    return f"Event {data['event']!r} posted.", None


def _tool_result(request, execution, data):
    _, remaining = resumes.check_submit_tool_result(
        execution, data["tool_call_id"], data["outcome"], data["result"], by=_by(request)
    )
    pending = f" Still pending: {', '.join(remaining)}." if remaining else ""
    return f"Result of {data['tool_call_id']} posted ({data['outcome']}).{pending}", None


def _retry(request, execution, data):
    retry = reruns.check_retry_execution(execution=execution)
    return f"Retried as {retry.id}.", retry


def _fork(request, execution, data):
    fork = reruns.check_fork_execution(execution=execution, from_seq=data["from_seq"], model=data["model"] or None)
    model = f" on {data['model']}" if data["model"] else ""
    return f"Forked from event {fork.forked_from_seq} as {fork.id}{model}.", fork


def _refund(request, execution, data):
    note = data["note"] or f"refund by {_by(request)}"
    entry = refunds.check_refund_execution(execution=execution, amount=data["amount"], note=note)
    return f"Refunded {entry.amount} credits (balance {entry.balance_after}).", None


def _purge(request, execution, data):
    purge.purge_execution(execution)
    return "Purged: inputs, outputs, events and files erased.", None


def _unfinished(execution) -> bool:
    return execution.state not in TERMINAL_STATES


def _refundable(execution) -> bool:
    if execution.state not in TERMINAL_STATES or execution.credits <= 0:
        return False
    charged, refunded = charged_and_refunded(execution.id)
    return charged > 0 and not refunded


@dataclass(frozen=True)
class ActionSpec:
    label: str
    permission: str
    allowed: object  # execution -> bool: whether its state allows the action
    form: type
    act: object  # (request, execution, cleaned data) -> (message, new execution or None)
    description: str


ACTIONS = {
    "cancel": ActionSpec(
        "Cancel",
        CHANGE,
        _unfinished,
        ConfirmForm,
        _cancel,
        "Cancel the execution: at once when queued or suspended, between steps when running. "
        "Its unfinished sub-executions are cancelled with it.",
    ),
    "approve": ActionSpec(
        "Approve",
        CHANGE,
        lambda e: e.state == ExecutionState.AWAITING_APPROVAL,
        CommentForm,
        _decide("approved"),
        "Approve the gate the execution waits at; it is queued again.",
    ),
    "reject": ActionSpec(
        "Reject",
        CHANGE,
        lambda e: e.state == ExecutionState.AWAITING_APPROVAL,
        CommentForm,
        _decide("rejected"),
        "Reject the gate the execution waits at (it fails with approval_rejected unless the gate continues).",
    ),
    "external-event": ActionSpec(
        "Post an external event",
        CHANGE,
        lambda e: e.state == ExecutionState.WAITING_FOR_EXTERNAL_EVENT,
        ExternalEventForm,
        _external_event,
        "Deliver the event the execution waits for; it is queued again.",
    ),
    "tool-result": ActionSpec(
        "Answer a client tool call",
        CHANGE,
        lambda e: e.state == ExecutionState.AWAITING_CLIENT_TOOL and bool(_pending_tool_calls(e)),
        ToolResultForm,
        _tool_result,
        "Post the result of a pending client tool call, as the client would; the last one resumes the execution.",
    ),
    "retry": ActionSpec(
        "Retry",
        CHANGE,
        lambda e: e.state in TERMINAL_STATES and reruns.rerun_refusal(e) is None,
        ConfirmForm,
        _retry,
        "Start a new execution of the same responder version with the same inputs and caller, from the start.",
    ),
    "fork": ActionSpec(
        "Fork",
        CHANGE,
        lambda e: reruns.fork_refusal(e) is None and ExecutionCheckpoint.objects.filter(execution_id=e.id).exists(),
        ForkForm,
        _fork,
        "Start a new execution from a checkpoint of this one, optionally on another model alias: what came "
        "before the checkpoint is not run again.",
    ),
    "refund": ActionSpec(
        "Refund credits",
        REFUND,
        _refundable,
        RefundForm,
        _refund,
        "Give back credits this finished execution was charged, to the account charged. Once per execution.",
    ),
    "purge": ActionSpec(
        "Purge",
        PURGE,
        lambda e: e.state in TERMINAL_STATES and not e.is_purged,
        ConfirmForm,
        _purge,
        "Erase the execution's inputs, outputs, events, checkpoints and files; its row and accounting stay.",
    ),
}


def _url(execution, name: str) -> str:
    return reverse("admin:executions_execution_action", args=[execution.pk, name])


def available_actions(execution, user) -> list[Action]:
    """The actions this user may take on this execution in its current state."""
    return [
        Action(name, spec.label, _url(execution, name))
        for name, spec in ACTIONS.items()
        if user.has_perm(spec.permission) and spec.allowed(execution)
    ]


class ExecutionActionsMixin:
    """Adds the action views to ExecutionAdmin."""

    def get_urls(self):
        view = self.admin_site.admin_view(self.execution_action)
        return [
            path("<path:object_id>/actions/<str:action>/", view, name="executions_execution_action"),
            *super().get_urls(),
        ]

    def execution_action(self, request, object_id, action):
        spec = ACTIONS.get(action)
        if spec is None:
            raise Http404("No such action.")
        check_view_permission(request, Execution)
        if not request.user.has_perm(spec.permission):
            raise PermissionDenied
        execution = Execution.objects.filter(pk=object_id).first() if is_uuid(object_id) else None
        if execution is None:
            raise Http404("No such execution.")
        error, status, form = None, 200, None
        if not spec.allowed(execution):
            error, status = f"{spec.label} is not possible: the execution is {execution.get_state_display()}.", 409
        elif request.method == "POST":
            form = spec.form(request.POST, execution=execution)
            if form.is_valid():
                try:
                    message, created = spec.act(request, execution, form.cleaned_data)
                except ApiError as exc:
                    error, status = exc.message, exc.status_code
                else:
                    return self._done(request, execution, action, message, created)
            else:
                status = 400
        else:
            form = spec.form(execution=execution, initial_query=request.GET)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{spec.label}: execution {execution.pk}",
            "execution": execution,
            "action": Action(action, spec.label, _url(execution, action)),
            "description": spec.description,
            "form": form,
            "error": error,
        }
        return TemplateResponse(request, "admin/executions/execution/action.html", context, status=status)

    def _done(self, request, execution, action, message, created):
        """Recorded in the admin log, told to the operator, then the execution's page (a rerun's: the new one)."""
        self.log_change(request, execution, f"{action}: {message}")
        if created is not None:
            self.log_addition(request, created, f"{action} of {execution.pk}")
        messages.success(request, message)
        target = created or execution
        return HttpResponseRedirect(reverse("admin:executions_execution_change", args=[target.pk]))
