from django.core.management.base import BaseCommand

from accounts.services import create_tenant
from core.commands import write_result


class Command(BaseCommand):
    help = "Create a tenant with one workspace, a workspace key and an end-user key (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")

    def handle(self, *args, **options):
        result = create_tenant(options["name"]).as_json()
        write_result(self, result, options["json"])
