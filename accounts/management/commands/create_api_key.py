import uuid

from config.commands import write_result
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKeyKind, Customer, Workspace
from accounts.services import issue_api_key


class Command(BaseCommand):
    help = "Issue an API key for a workspace; the key is printed once and stored only as a digest."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace id")
        parser.add_argument("--kind", required=True, choices=["workspace", "end_user"])
        parser.add_argument("--name", default="")
        parser.add_argument("--customer", help="end_user keys: the customer's external id (created if new); "
                            "its credits are used and shown in X-Credits-Remaining")
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")

    def handle(self, *args, **options):
        try:
            workspace = Workspace.objects.get(id=uuid.UUID(options["workspace"].removeprefix("workspace:")))
        except (ValueError, Workspace.DoesNotExist):
            raise CommandError(f"No workspace {options['workspace']!r}.")
        if options["customer"] and options["kind"] != "end_user":
            raise CommandError("--customer goes with --kind end_user.")
        customer = None
        if options["customer"]:
            customer, _ = Customer.objects.get_or_create(workspace=workspace, external_id=options["customer"])
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
