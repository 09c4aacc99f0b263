"""Hosts: network namespaces on one bridge, like the containers of one compose network.

Each run names everything `srd` + its pid (namespaces `srd-<pid>-<host>`, the bridge `srd<pid>b`,
veths `srd<pid>v<n>`) and takes the /24 10.213.<pid % 250>.0, so two runs never share a name or an
address, and what a crashed run left is recognised by its dead pid and removed. A host has its veth
and loopback only, no default route: nothing it runs can reach beyond the bridge. The root namespace
(the test process, "outside") has the bridge's .1 address, as the machine running compose has."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

PREFIX = "srd"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace_processes(namespace: str) -> None:
    """SIGKILL every process of the namespace (what a host's power loss does), and wait for none to be left."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [int(p) for p in ip("netns", "pids", namespace, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def remove_leftovers(own_pid: int | None = None) -> list[str]:
    """Remove the namespaces and links of runs whose process is gone (a crashed or killed drill), or
    of `own_pid`; returns their names."""

    def stale(pid: str) -> bool:
        return int(pid) == own_pid or not _alive(int(pid))

    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{PREFIX}-(\d+)-[a-z0-9]+", name)
        if match and stale(match.group(1)):
            kill_namespace_processes(name)
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        match = re.match(rf"\d+: ({PREFIX}(\d+)[bv]\d*)[@:]", line)
        if match and stale(match.group(2)):
            ip("link", "del", match.group(1), check=False)
            removed.append(match.group(1))
    return removed


class Network:
    """The bridge, in the root namespace, and the /24 of this run."""

    def __init__(self, pid: int | None = None):
        self.pid = pid or os.getpid()
        self.subnet = f"10.213.{self.pid % 250}"
        self.bridge = f"{PREFIX}{self.pid}b"
        self.gateway = f"{self.subnet}.1"
        self.hosts: list[Host] = []

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts))
        self.hosts.append(host)
        host.create()
        return host

    def destroy(self) -> None:
        """Every host's processes killed, its namespace and veth gone, then the bridge."""
        for host in self.hosts:
            host.destroy()
        ip("link", "del", self.bridge, check=False)
        remove_leftovers(own_pid=self.pid)


class Host:
    """One network namespace with eth0 on the bridge: a container's network, as compose makes it."""

    def __init__(self, network: Network, name: str, index: int):
        self.network, self.name = network, name
        self.namespace = f"{PREFIX}-{network.pid}-{name}"
        self.veth = f"{PREFIX}{network.pid}v{index}"
        self.address = f"{network.subnet}.{10 + index}"

    def create(self) -> None:
        ip("netns", "add", self.namespace)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", f"{self.veth}p", "netns", self.namespace)
        ip("-n", self.namespace, "link", "set", f"{self.veth}p", "name", "eth0")
        ip("-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip("-n", self.namespace, "link", "set", "eth0", "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")
        ip("link", "set", self.veth, "master", self.network.bridge, "up")

    def partition(self) -> None:
        """The host's cable pulled: its veth down, so nothing goes in or out (its processes live on)."""
        ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        ip("link", "set", self.veth, "up")

    def kill_all(self) -> None:
        kill_namespace_processes(self.namespace)

    def destroy(self) -> None:
        kill_namespace_processes(self.namespace)
        ip("netns", "del", self.namespace, check=False)
        ip("link", "del", self.veth, check=False)
