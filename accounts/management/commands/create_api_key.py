import uuid

from config.commands import write_result
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKeyKind, Workspace
from accounts.services import issue_api_key


class Command(BaseCommand):
    help = "Issue an API key for a workspace; the key is printed once and stored only as a digest."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace id")
        parser.add_argument("--kind", required=True, choices=["workspace", "end_user"])
        parser.add_argument("--name", default="")
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")

    def handle(self, *args, **options):
        try:
            workspace = Workspace.objects.get(id=uuid.UUID(options["workspace"].removeprefix("workspace:")))
        except (ValueError, Workspace.DoesNotExist):
            raise CommandError(f"No workspace {options['workspace']!r}.")
        issued = issue_api_key(workspace, ApiKeyKind(options["kind"]), name=options["name"])
        result = {
            "api_key": issued.raw_key,
            "api_key_id": str(issued.api_key.id),
            "kind": issued.api_key.kind,
            "prefix": issued.api_key.prefix,
            "workspace_id": str(workspace.id),
            "principal_id": str(issued.api_key.principal_id),
        }
        write_result(self, result, options["json"])
