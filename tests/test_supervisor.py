"""`make run` keeps its processes running: the supervisor restarts a child killed with SIGKILL, with
backoff, and `make run` itself works on a fresh clone pointed at existing servers."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from ops.supervisor import Supervisor
from tests.conftest import REPO_ROOT, _free_port
from tests.helpers import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
QUITTER = [sys.executable, "-c", "raise SystemExit(3)"]


class Running:
    """A supervisor running on a thread of its own, stopped at the end of the block."""

    def __init__(self, commands, **timings):
        self.lines: list[tuple[float, str]] = []
        self.supervisor = Supervisor(commands, log=lambda line: self.lines.append((time.monotonic(), line)), **timings)
        self.stopping = False
        self.thread = threading.Thread(target=self.supervisor.run, args=(lambda: self.stopping, 0.05), daemon=True)

    def __enter__(self):
        self.supervisor.start()
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping = True
        self.thread.join(5)
        self.supervisor.stop(timeout=5)

    def logged(self, pattern: str) -> list[tuple[float, str]]:
        return [(at, line) for at, line in self.lines if re.search(pattern, line)]


def test_a_child_killed_with_sigkill_is_restarted_and_the_others_are_left_alone():
    with Running({"worker": (SLEEPER, dict(os.environ)), "api": (SLEEPER, dict(os.environ))}, min_backoff=0.2) as run:
        killed, other = run.supervisor.pid("worker"), run.supervisor.pid("api")
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: run.supervisor.pid("worker") != killed, timeout=5)
        assert run.logged(rf"worker \(pid {killed}\) exited with code -9; restarting in 0.2 s")
        assert run.supervisor.children["worker"].process.poll() is None
        assert run.supervisor.pid("api") == other and run.supervisor.children["api"].restarts == 0
        children = [child.process for child in run.supervisor.children.values()]
    assert all(process.poll() is not None for process in children)  # stop() ended them all


def test_a_child_that_keeps_dying_is_restarted_with_a_growing_pause():
    with Running({"beat": (QUITTER, dict(os.environ))}, min_backoff=0.1, max_backoff=0.4) as run:
        wait_for(lambda: len(run.logged("beat started")) >= 5, timeout=10)
    pauses = [line.rsplit("restarting in ", 1)[1] for _, line in run.logged("exited with code 3")]
    assert pauses[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]
    starts = [at for at, _ in run.logged("beat started")]
    assert starts[3] - starts[2] >= 0.35  # it waited, it did not spin


@pytest.mark.django_db(transaction=True)
def test_make_run_on_a_fresh_clone_with_database_and_redis_urls_restarts_a_killed_worker(services_env, tmp_path):
    """`manage.py run_platform` (what `make run` runs) with DATABASE_URL / REDIS_URL set and a data
    folder that does not exist yet: beat needs its schedule file's folder. Then its worker is
    killed with SIGKILL: it comes back, the API never stopped."""
    port = _free_port()
    env = {
        # its own metrics directory (.data/prometheus, emptied at its start) and log format defaults
        **{k: v for k, v in services_env.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT")},
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "LOCAL_DATA_DIR": str(tmp_path / "fresh" / ".data"),
        "PORT": str(port),
        "WORKER_CONCURRENCY": "4",
        "CELERY_QUEUE": "run-platform-test",  # not the session worker's queue
        "HOUSEKEEPING_QUEUE": "run-platform-housekeeping",
        "METRICS_TOKEN": "run-platform",
    }
    log = tmp_path / "run_platform.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_platform"],
        cwd=REPO_ROOT,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "Platform running at" in log.read_text() or process.poll() is not None, timeout=90)
        assert process.poll() is None, log.read_text()[-3000:]
        assert (tmp_path / "fresh" / ".data").is_dir()

        worker_pid = int(re.search(r"worker started \(pid (\d+)\)", log.read_text()).group(1))
        logs = tmp_path / "fresh" / ".data" / "logs"
        # the processes' whole logs go to their files, as JSON lines; the console keeps the banner and warnings
        wait_for(lambda: (logs / "worker.log").exists() and "ready." in (logs / "worker.log").read_text(), timeout=60)
        assert "ready." not in log.read_text() and "[tasks]" not in log.read_text()  # nor Celery's banners
        assert "eak_" in log.read_text() and "Logs (JSON lines)" in log.read_text()  # the banner
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer run-platform"})
        assert metrics.status_code == 200 and "skillrun_queue_depth" in metrics.text
        os.killpg(worker_pid, signal.SIGKILL)
        wait_for(lambda: f"worker (pid {worker_pid}) exited with code -9" in log.read_text(), timeout=10)
        wait_for(lambda: len(re.findall(r"worker started \(pid \d+\)", log.read_text())) == 2, timeout=10)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert process.poll() is None
        assert "housekeeping (pid" not in log.read_text()  # beat found its schedule's folder: it never exited
        # beat ran the reaper every second meanwhile: its lines are not on the console (nor at INFO in its file)
        assert "reap_executions[" not in log.read_text() and "Sending due task" not in log.read_text()
        housekeeping_lines = (logs / "housekeeping.log").read_text().splitlines()
        assert housekeeping_lines and all(
            json.loads(line)["level"] for line in housekeeping_lines if line.startswith("{")
        )
        assert not [line for line in housekeeping_lines if "reap_executions[" in line or "Sending due task" in line]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    assert "Stopped." in log.read_text()
