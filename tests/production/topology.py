"""The compose topology on this machine: the hosts, the data host's servers, the one-shots and the
platform's services, started in compose's order; and its teardown, which runs whatever happened.

Hosts (network.py): `data` (postgres, pgbouncer, redis, minio: one address answers every name, as
the services of one compose network do by name), `migrate1` and `migrate2` (two migrates at once, as
several deploying hosts would), `api`, `worker1`, `worker2` (the worker service scaled to two),
`webhooks` and `housekeeping`. Every service's command, environment and tmpfs come from `docker compose config`
(compose.py); only the image's side is mapped onto the checkout.
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.production.compose import (
    CHECKOUT,
    platform_command,
    platform_environment,
    render,
    stop_grace_seconds,
    write_env_file,
)
from tests.production.data import DataHost, wait_until
from tests.production.forwarder import Forwarder
from tests.production.network import Host, Network, remove_leftovers
from tests.production.service import Service

# host -> the compose service it runs (the worker service scaled to two hosts)
PLATFORM_HOSTS = {
    "api": "api",
    "worker1": "worker",
    "worker2": "worker",
    "webhooks": "webhooks",
    "housekeeping": "housekeeping",
}
CELERY_HOSTS = ("worker1", "worker2", "webhooks", "housekeeping")
# compose's DNS: a service's name resolves to its host (the worker's to its first replica)
ALIASES = {"data": "postgres pgbouncer redis minio", "migrate1": "migrate", "worker1": "worker"}
STATE_ROOT = Path("/tmp")  # the data servers' folders: /tmp/srd-<pid>, reachable by their unprivileged users
METRICS_TOKEN = "production-drill-metrics"


def remove_stale_state() -> None:
    for folder in STATE_ROOT.glob("srd-*"):
        match = re.fullmatch(r"srd-(\d+)", folder.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(folder, ignore_errors=True)


class Topology:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.logs = tmp_path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.network = Network()
        self.state = STATE_ROOT / f"srd-{self.network.pid}"
        self.hosts: dict[str, Host] = {}
        self.services: dict[str, Service] = {}
        self.forwarder: Forwarder | None = None
        self.data: DataHost | None = None
        self.seed: dict = {}

    # --- bring-up, in compose's order ---------------------------------------------------------------

    def up(self) -> None:
        remove_leftovers()
        remove_stale_state()
        self.state.mkdir(mode=0o755)
        self.network.create()
        for name in ("data", "migrate1", "migrate2", *PLATFORM_HOSTS):
            self.hosts[name] = self.network.add_host(name)
        self.forwarder = Forwarder(self.hosts["api"].address, 8000)
        self.env = write_env_file(
            self.tmp_path / "env",
            # what an operator's .env says: where clients reach the API and S3 from (the published port;
            # the data host's address from outside), the hosts the API answers, the metrics token
            PUBLIC_BASE_URL=self.forwarder.url,
            ALLOWED_HOSTS="127.0.0.1,localhost,api",
            CSRF_TRUSTED_ORIGINS=self.forwarder.url,
            S3_PUBLIC_ENDPOINT_URL=f"http://{self.hosts['data'].address}:9000",
            METRICS_TOKEN=METRICS_TOKEN,
            WORKER_CONCURRENCY="100",
        )
        self.rendered = render(self.tmp_path / "env")
        self.hosts_file = self._write_hosts_file()
        self.data = DataHost(self.hosts["data"], self.rendered, self.state, self.logs, self.hosts_file, CHECKOUT)
        self.data.start()
        self.migrate_twice()
        self.bucket = self.data.create_bucket()
        self.seed = self.run_seed()
        for host_name, service_name in PLATFORM_HOSTS.items():
            self.services[host_name] = self.platform_service(host_name, service_name).start()
        self.wait_platform_ready()

    def _write_hosts_file(self) -> Path:
        """/etc/hosts for every service: each host by its name and its compose services' names."""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{host.address} {name} {ALIASES.get(name, '')}".rstrip() for name, host in self.hosts.items()]
        path = self.tmp_path / "hosts"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)
        return path

    def platform_service(self, host_name: str, service_name: str, log_name: str | None = None) -> Service:
        service = self.rendered["services"][service_name]
        return Service(
            self.hosts[host_name],
            log_name or host_name,
            platform_command(service),
            platform_environment(service),
            self.logs / f"{log_name or host_name}.log",
            checkout=CHECKOUT,
            hosts_file=self.hosts_file,
            tmpfs=tuple(service.get("tmpfs", ())),
            stop_timeout=stop_grace_seconds(service),
        )

    def migrate_twice(self) -> None:
        """Compose's migrate, from two hosts at once: the advisory lock (ops/management/commands/migrate.py)
        makes the second wait and then find nothing to apply."""
        migrates = [self.platform_service(host, "migrate").start() for host in ("migrate1", "migrate2")]
        for migrate in migrates:
            status = migrate.wait(180)
            assert status == 0, f"{migrate.name} exited {status}:\n{migrate.tail()}"
        outputs = [migrate.log.read_text(errors="replace") for migrate in migrates]
        assert sum("Applying " in output for output in outputs) == 1, "both migrates applied migrations"
        assert any("No migrations to apply" in output for output in outputs)

    def run_seed(self) -> dict:
        seed = self.platform_service("migrate1", "migrate", log_name="seed")
        seed.command = [
            seed.command[0],
            "manage.py",
            "shell",
            "-c",
            "from tests.production.seed import main; main()",
        ]
        seed.start()
        status = seed.wait(120)
        assert status == 0, f"seed exited {status}:\n{seed.tail()}"
        line = next(line for line in reversed(seed.log.read_text().splitlines()) if line.startswith("{"))
        return json.loads(line)

    def wait_platform_ready(self) -> None:
        wait_until("the api's /readyz", lambda: self.get("/readyz").status_code == 200, 90, self.services["api"])
        for name in CELERY_HOSTS:
            self.wait_celery_ready(name)

    def wait_celery_ready(self, name: str, timeout: float = 90) -> None:
        service = self.services[name]
        start = service.log.read_text(errors="replace").rfind("--- start")

        def ready() -> bool:
            return " ready." in service.log.read_text(errors="replace")[start:] and self.scrape(name).status_code == 200

        wait_until(f"{name} ready", ready, timeout, service)

    # --- access from outside ----------------------------------------------------------------------

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(f"{self.forwarder.url}{path}", timeout=kwargs.pop("timeout", 5), **kwargs)

    def scrape(self, host_name: str) -> httpx.Response:
        """A worker's or housekeeping's WORKER_METRICS_PORT, from the root namespace through the bridge."""
        return httpx.get(f"http://{self.hosts[host_name].address}:9100/metrics", timeout=5)

    # --- operations the faults use --------------------------------------------------------------------

    def restart(self, host_name: str, timeout: float = 90) -> None:
        """`docker restart`: the stop signal, then the same command again, ready."""
        service = self.services[host_name]
        service.stop()
        service.start()
        if host_name == "api":
            wait_until("the api's /readyz", lambda: self.get("/readyz").status_code == 200, timeout, service)
        else:
            self.wait_celery_ready(host_name, timeout)

    # --- teardown ---------------------------------------------------------------------------------------

    def all_services(self) -> list[Service]:
        return [*self.services.values(), *(self.data.all() if self.data else [])]

    def tails(self, size: int = 2500) -> str:
        return "\n".join(
            f"===== {path.name} =====\n{path.read_text(errors='replace')[-size:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def destroy(self) -> None:
        """Every process, namespace, link and folder of this run gone; safe to call twice."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda service: service.stop(5), [s for s in self.all_services() if s.running()]))
        if self.forwarder is not None:
            self.forwarder.close()
            self.forwarder = None
        self.network.destroy()
        shutil.rmtree(self.state, ignore_errors=True)
