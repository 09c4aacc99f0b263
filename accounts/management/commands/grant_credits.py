from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from accounts.credits import do_grant_credits
from accounts.models import CreditAccount
from accounts.services import workspace_and_customer
from core.commands import write_result


class Command(BaseCommand):
    help = "Add credits to a workspace's account, or to a customer's (created if new)."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace id")
        parser.add_argument("--customer", help="The customer's external id (its account); none: the workspace's")
        parser.add_argument("--amount", required=True)
        parser.add_argument("--note", default="")
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")

    def handle(self, *args, **options):
        try:
            amount = Decimal(options["amount"])
        except InvalidOperation:
            raise CommandError("--amount must be a number.")
        if not amount.is_finite() or amount <= 0:
            raise CommandError("--amount must be a positive number.")
        try:
            workspace, customer = workspace_and_customer(options["workspace"], options["customer"])
        except LookupError as exc:
            raise CommandError(str(exc))
        account, _ = CreditAccount.objects.get_or_create(workspace=workspace, customer=customer)
        entry = do_grant_credits(account, amount, note=options["note"])
        write_result(
            self,
            {
                "workspace_id": str(workspace.id),
                "customer_id": str(customer.id) if customer else None,
                "account_id": str(account.id),
                "balance": str(entry.balance_after),
            },
            options["json"],
        )
