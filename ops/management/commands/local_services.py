import json

from django.core.management.base import BaseCommand

from ops import local_services


class Command(BaseCommand):
    help = "Start, stop or show the embedded PostgreSQL and Redis used when DATABASE_URL/REDIS_URL are unset."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args, **options):
        if options["action"] == "start":
            local_services.ensure_started(stop_at_exit=False)
        elif options["action"] == "stop":
            local_services.stop()
        self.stdout.write(json.dumps(local_services.status(), indent=2))
