"""The production topology as a drill (markers `drill` and `production`; `make drill-production`).

docker-compose.yml's deployment rebuilt without a container engine (tests/production/): every
service's command and environment from `docker compose config`, each platform service as uid 10001
with the code read-only, on hosts that are network namespaces on a bridge; PostgreSQL (fsync on)
behind PgBouncer in transaction mode, Redis, an S3 server; migrate run twice at once, the bucket
job, then the api, two workers and housekeeping. The test process is the outside: it reaches the
api through its published port and S3 through the data host's address, as clients would.

Where network namespaces cannot be made (not root, no `ip`), the drill skips and says why; with
REQUIRE_NETNS=1 (.ci/run) it fails instead.
"""

import os
import shutil
import subprocess

import httpx
import pytest

from tests.production import seed
from tests.production.topology import Topology

pytestmark = [pytest.mark.drill, pytest.mark.production, pytest.mark.timeout(900)]


def namespaces_unavailable() -> str | None:
    """Why this machine cannot run the drill, or None."""
    for tool in ("ip", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"no `{tool}` (iproute2, util-linux)"
    if os.geteuid() != 0:
        return "not root: creating network namespaces needs CAP_NET_ADMIN and CAP_SYS_ADMIN"
    probe = f"srd-{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if not any(os.path.exists(p) for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")):
        return "no pgbouncer binary (apt-get install pgbouncer)"
    return None


@pytest.fixture(scope="module")
def topology(tmp_path_factory, request):
    reason = namespaces_unavailable()
    if reason:
        if os.environ.get("REQUIRE_NETNS") == "1":
            pytest.fail(f"REQUIRE_NETNS=1 but {reason}")
        pytest.skip(reason)
    built = Topology(tmp_path_factory.mktemp("production"))
    request.addfinalizer(built.destroy)  # first: whatever fails below, nothing is left behind
    try:
        built.up()
    except BaseException:
        print(built.tails())
        raise
    return built


def headers(topology) -> dict:
    return {"X-API-Key": topology.seed["customer_key"], "X-Workspace-Id": f"workspace:{topology.seed['workspace_id']}"}


def test_the_compose_topology_serves_a_sync_execution_from_outside(topology):
    try:
        response = httpx.post(
            f"{topology.forwarder.url}/agents/{topology.seed['paid_agent_id']}/execute",
            headers=headers(topology),
            json={"message": "hi"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        body = response.json()["data"]
        assert body["status"] == "completed" and body["output"]["text"] == seed.REPLY
    except BaseException:
        print(topology.tails())
        raise
