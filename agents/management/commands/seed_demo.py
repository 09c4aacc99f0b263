from django.core.management.base import BaseCommand

from agents.demo import seed_demo
from core.commands import write_result


class Command(BaseCommand):
    help = "Create (idempotently) the demo workspace with one agent and one skill on the built-in model."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")

    def handle(self, *args, **options):
        result = seed_demo()
        write_result(self, result, options["json"])
