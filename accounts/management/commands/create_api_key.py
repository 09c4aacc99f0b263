from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKeyKind
from accounts.services import issue_api_key, workspace_and_customer
from core.commands import write_result


class Command(BaseCommand):
    help = "Issue an API key for a workspace; the key is printed once and stored only as a digest."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace id")
        parser.add_argument("--kind", required=True, choices=["workspace", "end_user"])
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--customer",
            help="end_user keys: the customer's external id (created if new); "
            "its credits are used and shown in X-Credits-Remaining",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")

    def handle(self, *args, **options):
        if options["customer"] and options["kind"] != "end_user":
            raise CommandError("--customer goes with --kind end_user.")
        try:
            workspace, customer = workspace_and_customer(options["workspace"], options["customer"])
        except LookupError as exc:
            raise CommandError(str(exc))
        issued = issue_api_key(workspace, ApiKeyKind(options["kind"]), name=options["name"], customer=customer)
        result = {
            "api_key": issued.raw_key,
            "api_key_id": str(issued.api_key.id),
            "kind": issued.api_key.kind,
            "prefix": issued.api_key.prefix,
            "workspace_id": str(workspace.id),
            "principal_id": str(issued.api_key.principal_id),
            "customer_id": str(customer.id) if customer else None,
        }
        write_result(self, result, options["json"])
