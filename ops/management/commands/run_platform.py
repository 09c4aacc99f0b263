"""`make run`: migrate, seed the demo, start the API (uvicorn), a Celery worker and housekeeping (beat + reaper)."""

import os
import signal
import subprocess
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from agents.demo import seed_demo
from ops import local_services, processes


class Command(BaseCommand):
    help = "Run the whole platform in the foreground until Ctrl-C."

    def handle(self, *args, **options):
        host = os.environ.get("HOST", "127.0.0.1")
        port = int(os.environ.get("PORT", "8000"))
        call_command("migrate", interactive=False, verbosity=0)
        demo = seed_demo()
        env = {
            **os.environ,
            "DATABASE_URL": settings.DATABASE_URL,
            "REDIS_URL": settings.REDIS_URL,
            "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        }
        commands = {
            "api": processes.api(host, port),
            "worker": processes.worker(settings.WORKER_CONCURRENCY, settings.CELERY_TASK_DEFAULT_QUEUE),
            "housekeeping": processes.housekeeping(str(local_services.DATA_DIR / "celerybeat-schedule")),
        }
        children = {
            name: subprocess.Popen(command, env={**env, **process_env}, start_new_session=True)
            for name, (command, process_env) in commands.items()
        }

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            base = f"http://{host}:{port}"
            self._wait_healthy(base, children)
            self._print_banner(base, demo)
            while not stopping:
                for name, process in children.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with code {process.returncode}; stopping.")
                        stopping = True
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping api, worker and housekeeping...")
            for process in children.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for process in children.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
            self.stdout.write("Stopped.")

    def _wait_healthy(self, base, children):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if children["api"].poll() is not None:
                raise SystemExit("The API server failed to start.")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("The API server did not become healthy within 60 s.")

    def _print_banner(self, base, demo):
        key = demo["end_user_api_key"]
        self.stdout.write(
            "\n"
            f"Platform running at {base}  (admin: {base}/admin/ - create a login with "
            "`.venv/bin/python manage.py createsuperuser`)\n"
            f"Demo workspace: {demo['workspace_id']}\n"
            f"Demo end-user API key (wak_ key for the workspace: {demo['workspace_api_key']}):\n  {key}\n\n"
            "Stream the demo agent:\n"
            f"  curl -N -X POST {base}/agents/{demo['agent_id']}/execute/stream \\\n"
            f"    -H 'X-API-Key: {key}' \\\n"
            f"    -H 'X-Workspace-Id: workspace:{demo['workspace_id']}' \\\n"
            "    -H 'Content-Type: application/json' \\\n"
            '    -d \'{"message": "Hello, platform!"}\'\n\n'
            "Press Ctrl-C to stop everything.\n"
        )
