"""A service: one container's process, run in a host's network namespace, in a mount namespace of its
own, as the image's unprivileged user.

In that mount namespace (`unshare --mount --uts --propagation private`, so nothing leaks out):
the host's name (Celery names a worker after it), compose's service names through a generated
/etc/hosts bind-mounted over the machine's, the checkout read-only (the image's /app, and the venv
in it its /opt/venv), a private tmpfs on /tmp, and one on each of the service's compose `tmpfs:`
paths. Then `setpriv` drops to the uid/gid and no supplementary groups, and the command runs.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.production.network import Host

IMAGE_UID = 10001  # the Dockerfile's `useradd --uid 10001 app`
STAGE = "/mnt"  # where bind mounts wait while a tmpfs goes over their directory (a tmpfs itself, unmounted after)


def blocked_directories(paths: list[Path], uid: int) -> dict[Path, set[str]]:
    """The directories on the way to `paths` that `uid` cannot traverse, each with the children the
    paths go through, top-down.

    The venv's interpreter is a symlink into sys.base_prefix (here /root/.pyenv/versions/...), and
    /root is mode 0700: the image's user could not exec Python at all (in the image it lives in
    /opt/venv, world-readable). So, in the service's mount namespace only, each such directory gets
    a mode-0755 tmpfs over it into which the needed children are bound back, one level at a time:
    everything else under it (other users' files) stays out of reach. The same for a checkout
    cloned under such a directory."""
    blocked: dict[Path, set[str]] = {}
    for path in paths:
        path = path.resolve()
        for parent, child in zip(reversed(path.parents), [*reversed(path.parents)][1:] + [path]):
            info = parent.stat()
            others_may_enter = info.st_mode & stat.S_IXOTH or (info.st_uid == uid and info.st_mode & stat.S_IXUSR)
            if not others_may_enter:
                blocked.setdefault(parent, set()).add(child.name)
    return dict(sorted(blocked.items(), key=lambda item: len(item[0].parts)))


def _make_reachable(paths: list[Path], uid: int, stage: str) -> list[str]:
    lines = [f"mount -t tmpfs -o mode=0700 tmpfs {stage}"]
    for number, (directory, children) in enumerate(blocked_directories(paths, uid).items()):
        for child in sorted(children):
            lines += [f"mkdir {stage}/{number}-{child}", f"mount --bind {directory / child} {stage}/{number}-{child}"]
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {directory}")
        for child in sorted(children):
            lines += [f"mkdir {directory / child}", f"mount --move {stage}/{number}-{child} {directory / child}"]
    return lines


def _tmpfs(path: str) -> list[str]:
    """A fresh tmpfs at `path`, as compose's `tmpfs:` gives. Where the machine has no such directory,
    its nearest existing parent gets an empty tmpfs first (in the image that parent, e.g. /run, is
    an empty directory too), so nothing is created on the machine's own filesystem."""
    missing = Path(path)
    while not missing.parent.exists():
        missing = missing.parent
    lines = [] if Path(path).exists() else [f"mount -t tmpfs -o mode=0755 tmpfs {missing.parent}", f"mkdir -p {path}"]
    return [*lines, f"mount -t tmpfs -o mode=1777 tmpfs {path}"]


class Service:
    """`command` started on `host` as `uid`; its output goes to `log`. `env` is the whole environment
    the process gets (compose's `environment` plus the image's ENV)."""

    def __init__(
        self,
        host: Host,
        name: str,
        command: list[str],
        env: dict,
        log: Path,
        *,
        checkout: Path,
        hosts_file: Path,
        uid: int = IMAGE_UID,
        gid: int | None = None,
        cwd: Path | None = None,
        tmpfs: tuple[str, ...] = (),
        private_tmp: bool = True,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
    ):
        self.host, self.name, self.command, self.env, self.log = host, name, command, env, log
        self.checkout, self.hosts_file = checkout, hosts_file
        self.uid, self.gid = uid, uid if gid is None else gid
        self.cwd = cwd or checkout
        self.tmpfs, self.private_tmp, self.stop_signal = tmpfs, private_tmp, stop_signal
        self.stop_timeout = stop_timeout  # compose's stop_grace_period (docker's default: 10 s)
        self.process: subprocess.Popen | None = None

    def _setup_script(self) -> str:
        lines = ["set -e", f"hostname {self.host.name}", f"mount --bind {self.hosts_file} /etc/hosts"]
        if self.private_tmp:
            lines.append("mount -t tmpfs -o mode=1777 tmpfs /tmp")
        lines += _make_reachable([Path(sys.base_prefix), self.checkout, self.cwd], self.uid, STAGE)
        lines += [f"umount {STAGE}", f"mount --bind {self.checkout} {self.checkout}"]
        lines.append(f"mount -o remount,bind,ro {self.checkout}")
        for path in self.tmpfs:
            lines += _tmpfs(path)
        lines.append(f"cd {shlex.quote(str(self.cwd))}")
        lines.append(f'exec setpriv --reuid {self.uid} --regid {self.gid} --clear-groups -- "$@"')
        return "\n".join(lines)

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as output:
            output.write(f"--- start {time.strftime('%H:%M:%S')}: {shlex.join(self.command)}\n".encode())
            output.flush()
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.host.namespace, "unshare", "--mount", "--uts", "--propagation", "private"]
                + ["--", "sh", "-c", self._setup_script(), self.name, *self.command],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, number: int) -> None:
        """To the service's process group (uvicorn's workers with their master)."""
        if self.running():
            try:
                os.killpg(self.process.pid, number)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float | None = None) -> int | None:
        """The stop signal (SIGTERM unless the image says otherwise), as `docker stop` sends it, then
        SIGKILL after `timeout` (the service's stop_timeout); returns the exit status."""
        if self.process is None:
            return None
        self.send(self.stop_signal)
        try:
            return self.process.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            return self.process.wait(10)

    def wait(self, timeout: float) -> int:
        """For a one-shot: its exit status (the output's tail in the error when it fails or hangs)."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(5)
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.tail()}")
        return status

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else "(no log)"
