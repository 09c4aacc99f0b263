"""The credit ledger: grants, holds at the start of an execution, settlement at its end.

Every change is one ledger entry plus one conditional UPDATE of the account's balance, in one
transaction. A hold that the balance cannot cover raises InsufficientCredits (the API's 402)
before the execution row is inserted. Settlement happens inside the execution's terminal
transition, so it runs exactly once: the hold is released and, on completion, the actual cost
is charged (never more than the hold); failure and cancellation refund the hold entirely.
"""

from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from accounts.models import CreditAccount, CreditEntry, CreditEntryKind
from core.errors import ApiError
from core.metrics import CREDITS, inc_on_commit

ZERO = Decimal("0")


class InsufficientCredits(ApiError):
    def __init__(self, balance: Decimal, required: Decimal):
        super().__init__(
            402,
            "insufficient_credits",
            f"This execution needs {required} credits; the balance is {balance}.",
            balance=str(balance),
            required=str(required),
        )


def account_for(workspace, principal) -> CreditAccount:
    """The customer's account when the principal belongs to one, else the workspace's."""
    customer_id = principal.customer_id if principal is not None else None
    account, _ = CreditAccount.objects.get_or_create(workspace=workspace, customer_id=customer_id)
    return account


@transaction.atomic
def do_post_entry(
    account_id, kind: str, amount: Decimal, execution_id=None, note: str = "", require_funds: bool = False
) -> CreditEntry:
    """Append one entry and move the balance by `amount` (signed).

    Locks the account's row (its conditional UPDATE) until the caller's transaction ends, so the
    balance and `balance_after` agree; with `require_funds` a debit the balance cannot cover
    raises InsufficientCredits instead."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_creditaccount SET balance = balance + %s WHERE id = %s"
            + (" AND balance + %s >= 0" if require_funds else "")
            + " RETURNING balance",
            [amount, account_id, amount] if require_funds else [amount, account_id],
        )
        row = cursor.fetchone()
    if row is None:
        balance = CreditAccount.objects.values_list("balance", flat=True).get(id=account_id)
        raise InsufficientCredits(balance, -amount)
    return CreditEntry.objects.create(
        account_id=account_id, kind=kind, amount=amount, balance_after=row[0], execution_id=execution_id, note=note
    )


def do_grant_credits(account: CreditAccount, amount: Decimal, note: str = "") -> CreditEntry:
    """Locks the account's row (do_post_entry)."""
    if amount <= 0:
        raise ValueError("a grant must be positive")
    return do_post_entry(account.id, CreditEntryKind.GRANT, Decimal(amount), note=note)


def do_hold_credits(account: CreditAccount, execution_id, amount: Decimal) -> None:
    """Locks the account's row (do_post_entry); InsufficientCredits when the balance cannot cover it."""
    do_post_entry(account.id, CreditEntryKind.HOLD, -amount, execution_id=execution_id, require_funds=True)
    inc_on_commit(CREDITS, "held", amount=float(amount))


def do_settle_credits(*, execution_id, account_id, held: Decimal, charge: Decimal) -> None:
    """Release the execution's hold and charge `charge` of it. Called inside the terminal
    transition (executions/terminal.py), whose row lock makes it run once; locks the account's row.

    The account and the hold are fixed when the execution is created, so its row tells them."""
    if account_id is None or held <= ZERO:
        return
    do_post_entry(account_id, CreditEntryKind.RELEASE, held, execution_id=execution_id)
    charge = max(min(charge, held), ZERO)
    if charge > ZERO:
        do_post_entry(account_id, CreditEntryKind.CHARGE, -charge, execution_id=execution_id)
        inc_on_commit(CREDITS, "charged", amount=float(charge))
    if held > charge:
        inc_on_commit(CREDITS, "refunded", amount=float(held - charge))


def charged_and_refunded(execution_id) -> tuple[Decimal, Decimal]:
    """What the ledger charged an execution (positive) and gave back of it by a refund."""
    totals = dict(
        CreditEntry.objects.filter(execution_id=execution_id, kind__in=[CreditEntryKind.CHARGE, CreditEntryKind.REFUND])
        .values_list("kind")
        .annotate(total=Sum("amount"))
    )
    return -(totals.get(CreditEntryKind.CHARGE) or ZERO), totals.get(CreditEntryKind.REFUND) or ZERO


class AlreadyRefunded(ApiError):
    def __init__(self):
        super().__init__(409, "already_refunded", "The credits of this execution were already refunded.")


@transaction.atomic
def check_refund_credits(*, execution_id, amount: Decimal | None = None, note: str = "") -> CreditEntry:
    """Give back `amount` (default: all) of what the ledger charged the execution, to the account
    charged: at most what was charged (400 `refund_exceeds_charge`), at most once (409
    `already_refunded`). The caller holds the execution's row lock, so refunds of one execution are
    taken one after the other; the unique constraint on (execution, refund) is the last word under
    any race: a second refund cannot commit."""
    charged, refunded = charged_and_refunded(execution_id)
    if refunded:
        raise AlreadyRefunded()
    if charged <= ZERO:
        raise ApiError(409, "nothing_to_refund", "No credits were charged for this execution.")
    amount = charged if amount is None else Decimal(amount)
    if amount <= ZERO:
        raise ApiError(400, "invalid_amount", "A refund must be positive.", field="amount")
    if amount > charged:
        raise ApiError(
            400,
            "refund_exceeds_charge",
            f"At most the {charged} credits charged can be refunded.",
            field="amount",
            charged=str(charged),
        )
    account_id = (
        CreditEntry.objects.filter(execution_id=execution_id, kind=CreditEntryKind.CHARGE)
        .values_list("account_id", flat=True)
        .first()
    )
    try:
        with transaction.atomic():
            entry = do_post_entry(account_id, CreditEntryKind.REFUND, amount, execution_id=execution_id, note=note)
    except IntegrityError:
        raise AlreadyRefunded() from None
    inc_on_commit(CREDITS, "refunded", amount=float(amount))
    return entry


def remaining_credits(principal) -> Decimal | None:
    """X-Credits-Remaining: only for principals that belong to a customer."""
    if principal is None or principal.customer_id is None:
        return None
    return (
        CreditAccount.objects.filter(customer_id=principal.customer_id).values_list("balance", flat=True).first()
        or ZERO
    )
