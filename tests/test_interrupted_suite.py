"""A test run that is interrupted (SIGTERM: a CI timeout, `kill`) stops every server it started: the
uvicorn and Celery processes of its fixtures and the embedded PostgreSQL and Redis it started
(tests/conftest.py turns SIGTERM into the interrupt pytest tears down after)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops import local_services
from tests.conftest import REPO_ROOT
from tests.helpers import wait_for

pytestmark = pytest.mark.live


def _descendants(pid: int) -> dict[int, str]:
    """The processes under `pid` (children of children...), with their command lines."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = commands.get(child, "")
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_sigterm_to_a_test_run_stops_every_server_it_started(tmp_path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "TEST_REDIS_URL")}
    env["LOCAL_DATA_DIR"] = str(data_dir)  # embedded servers of its own, which it must stop
    ports = subprocess.run(
        [sys.executable, "-c", "from ops import local_services as s; print(s.PG_PORT, s.REDIS_PORT)"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    log = tmp_path / "pytest.log"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "tests/test_streaming.py", "tests/test_drills.py", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        servers = wait_for(
            lambda: (
                (found := _descendants(run.pid))
                and any("uvicorn" in c for c in found.values())
                and any("celery" in c for c in found.values())
                and found
            ),
            timeout=120,
            interval=0.5,
        )
        time.sleep(1)
        servers = _descendants(run.pid) | servers
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=90)
        wait_for(lambda: not any(_alive(pid) for pid in servers), timeout=30, interval=0.5)
        for port in ports:
            wait_for(lambda port=int(port): not local_services._port_open(port), timeout=30, interval=0.5)
    finally:
        if run.poll() is None:
            run.kill()
        for pid in _descendants(run.pid):
            os.kill(pid, signal.SIGKILL)
    assert "KeyboardInterrupt" in log.read_text() or "signal 15" in log.read_text()
