"""`make run`: migrate, seed the demo, start the API (uvicorn), a Celery worker and housekeeping (beat + reaper),
and keep them running (ops/supervisor.py) until Ctrl-C.

The terminal shows the banner, the supervisor's lines and warnings; every process's whole log, as
JSON lines, goes to .data/logs/<process>.log (LOG_FILE, LOG_CONSOLE_LEVEL; set either to override).
The processes share their Prometheus metrics through .data/prometheus/ (PROMETHEUS_MULTIPROC_DIR),
emptied at each start, so the API's /metrics also reports the worker's and housekeeping's values.
"""

import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from prometheus_client import multiprocess

from agents.demo import seed_demo
from ops import local_services, processes
from ops.supervisor import Supervisor


def platform_env() -> dict:
    """The environment of the processes `make run` starts: this checkout's servers, and local
    development's defaults."""
    return {
        **os.environ,
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        # webhooks may target a receiver on this machine or the LAN (unless set false)
        "WEBHOOK_ALLOW_PRIVATE_URLS": os.environ.get("WEBHOOK_ALLOW_PRIVATE_URLS", "true"),
    }


class Command(BaseCommand):
    help = "Run the whole platform in the foreground until Ctrl-C."

    def handle(self, *args, **options):
        host = os.environ.get("HOST", "127.0.0.1")
        port = int(os.environ.get("PORT", "8000"))
        call_command("migrate", interactive=False, verbosity=0)
        demo = seed_demo()
        env = platform_env()
        schedule = local_services.DATA_DIR / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone with DATABASE_URL / REDIS_URL has no .data/
        metrics_dir = Path(settings.PROMETHEUS_MULTIPROC_DIR or local_services.DATA_DIR / "prometheus")
        shutil.rmtree(metrics_dir, ignore_errors=True)  # the values of an earlier run's processes
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        logs_dir = local_services.DATA_DIR / "logs"
        logs_dir.mkdir(exist_ok=True)
        env.setdefault("LOG_CONSOLE_LEVEL", "WARNING")
        commands = {
            "api": processes.api(host, port),
            "worker": processes.worker(settings.WORKER_CONCURRENCY, quiet=True),
            "webhooks": processes.webhooks(quiet=True),
            "housekeeping": processes.housekeeping(str(schedule), quiet=True),
        }
        supervisor = Supervisor(
            {
                name: (command, {"LOG_FILE": str(logs_dir / f"{name}.log"), **env, **process_env})
                for name, (command, process_env) in commands.items()
            },
            log=lambda line: self.stderr.write(f"[run_platform] {line}"),
            on_exit=lambda pid: multiprocess.mark_process_dead(pid, str(metrics_dir)),  # its live gauges
        )

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        supervisor.start()
        try:
            base = f"http://{host}:{port}"
            if self._wait_healthy(base, supervisor, lambda: stopping):
                self._print_banner(base, demo)
            supervisor.run(lambda: stopping)  # a child that dies is restarted (ops/supervisor.py)
        finally:
            self.stdout.write("Stopping api, worker and housekeeping...")
            # the worker hands its runs back within WORKER_SHUTDOWN_GRACE_SECONDS (workers/shutdown.py), then exits
            supervisor.stop(timeout=settings.WORKER_SHUTDOWN_GRACE_SECONDS + 5)
            self.stdout.write("Stopped.")

    def _wait_healthy(self, base, supervisor, stopping) -> bool:
        """True once /healthz answers 200; False if stopped meanwhile."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stopping():
            supervisor.poll()
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        if not stopping():
            raise SystemExit("The API server did not become healthy within 60 s.")
        return False

    def _print_banner(self, base, demo):
        key = demo["end_user_api_key"]
        if key:
            keys = f"Demo end-user API key (wak_ key for the workspace: {demo['workspace_api_key'] or demo['workspace_api_key_prefix'] + '..., issued earlier'}):\n  {key}\n"
        else:
            key = f"{demo['end_user_api_key_prefix']}..."
            keys = (
                f"Demo API keys: {demo['end_user_api_key_prefix']}... (end user) and {demo['workspace_api_key_prefix']}... "
                "(workspace), printed when\n  they were issued (an earlier `make run` or `seed_demo`) and still valid; "
                "`.venv/bin/python manage.py seed_demo --new-keys`\n  revokes them and prints new ones.\n"
            )
        self.stdout.write(
            "\n"
            f"Platform running at {base}  (admin: {base}/admin/ - create a login with "
            "`.venv/bin/python manage.py createsuperuser`)\n"
            f"In a browser: {base}/ (paste a key, talk to an agent), API docs at {base}/api/docs/\n"
            f"Demo workspace: {demo['workspace_id']}\n"
            f"{keys}\n"
            "Stream the demo agent:\n"
            f"  curl -N -X POST {base}/agents/{demo['agent_id']}/execute/stream \\\n"
            f"    -H 'X-API-Key: {key}' \\\n"
            f"    -H 'X-Workspace-Id: workspace:{demo['workspace_id']}' \\\n"
            "    -H 'Content-Type: application/json' \\\n"
            '    -d \'{"message": "Hello, platform!"}\'\n\n'
            f"Logs (JSON lines): {local_services.DATA_DIR / 'logs'}/{{api,worker,housekeeping}}.log; "
            "this terminal shows warnings.\n"
            "Press Ctrl-C to stop everything.\n"
        )
