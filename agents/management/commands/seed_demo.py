from django.core.management.base import BaseCommand

from agents.demo import seed_demo
from core.commands import write_result


class Command(BaseCommand):
    help = (
        "Create (idempotently) the demo workspace with one agent and one skill on the built-in model, and its two "
        "API keys: issued (and printed) the first time, kept afterwards; --new-keys revokes them and issues new ones."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object and nothing else.")
        parser.add_argument(
            "--new-keys",
            action="store_true",
            help="Revoke the demo's API keys and issue (and print) new ones; without it the keys issued earlier are kept.",
        )

    def handle(self, *args, **options):
        result = seed_demo(new_keys=options["new_keys"])
        write_result(self, result, options["json"])
        if not options["json"] and not result["keys_issued"]:
            self.stdout.write(
                "The demo keys issued earlier are kept and still work (a key is shown only once, when issued: "
                "see the output of the first `seed_demo` or `make run`); `seed_demo --new-keys` revokes them "
                "and prints new ones."
            )
