"""Refunding the credits of a finished execution (an operator's action, executions/admin_actions.py):
one `refund` entry of the ledger, linked to the execution, at most what was charged, never twice
(accounts/credits.check_refund_credits). The execution's row is locked first, so two refunds of
one execution are decided one after the other; its own columns (`credits`: what was charged) and
its event log (complete once it ended) stay as they are."""

from decimal import Decimal

from django.db import transaction

from accounts.credits import check_refund_credits
from accounts.models import CreditEntry
from core.errors import ApiError
from executions.models import TERMINAL_STATES, Execution


@transaction.atomic
def check_refund_execution(*, execution: Execution, amount: Decimal | None = None, note: str = "") -> CreditEntry:
    row = Execution.objects.select_for_update().get(id=execution.id)
    if row.state not in TERMINAL_STATES:
        raise ApiError(
            409, "execution_not_finished", f"Only a finished execution is refunded; this one is {row.state}."
        )
    return check_refund_credits(execution_id=row.id, amount=amount, note=note)
