"""Deployment files: every Kubernetes overlay renders (`kubectl kustomize`) and validates offline against the
Kubernetes schemas (kubernetes-validate, strict), the KEDA objects against a schema of the fields we use; the
compose file is accepted by `podman-compose config` (it needs the podman binary; `.ci/run` installs it) and
wires every service as documented. Environment variable names are checked against upscaling.config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.workers import WORKERS_ENV
from upscaling import accounts
from upscaling.backends import load_backends
from upscaling.broker import Topology
from upscaling.config import ENV

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
K8S_VERSION = "1.31.0"
# Custom resources the Kubernetes schemas do not know; checked by CRD_SCHEMAS below instead.
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("cert-manager.io/v1", "Certificate")}
# Secrets an overlay leaves to be managed outside the manifests.
EXTERNAL_SECRETS = {"production": {"upscaling-connections", "upscaling-backend-credentials",
                                   "upscaling-account-passwords",
                                   *(f"upscaling-{s}-account" for s in accounts.SERVICES)}}
# Settings the services read besides upscaling.config.ENV.
OTHER_ENV = {"OPENEO_BACKENDS", "OPENEO_BACKENDS_FILE", "METRICS_PORT", "HOME", "UPSCALING_SHARED_DIR", WORKERS_ENV,
             *accounts.TOOL_ENV}
APP_SERVICES = {"tiler", "dispatcher", "monitor", "gateway", "migrate", "accounts", "local-openeo"}

_STR = {"type": "string", "minLength": 1}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "Certificate": {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {"spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef", "dnsNames"],
            "properties": {
                "secretName": _STR,
                "dnsNames": {"type": "array", "minItems": 1, "items": _STR},
                "issuerRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                              "properties": {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                             "group": _STR}},
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                    "rotationPolicy": {"enum": ["Never", "Always"]}}},
            },
        }},
    },
    "ScaledObject": {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {"spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                   "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "metadata"],
                    "properties": {
                        "type": {"const": "rabbitmq"},
                        "authenticationRef": {"type": "object", "required": ["name"], "properties": {"name": _STR}},
                        "metadata": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["queueName", "mode", "value"],
                            "properties": {"protocol": {"enum": ["amqp", "http", "auto"]}, "queueName": _STR,
                                           "mode": {"enum": ["QueueLength", "MessageRate"]},
                                           "value": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}},
                        },
                    },
                }},
            },
        }},
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {"spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretTargetRef"],
            "properties": {"secretTargetRef": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["parameter", "name", "key"],
                "properties": {"parameter": _STR, "name": _STR, "key": _STR}}}},
        }},
    },
}


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing: apt-get install -y kubernetes-client (.ci/run does this)")
    return path


def _render(kubectl: str, path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {name: _render(kubectl, K8S / "overlays" / name) for name in OVERLAYS}


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("upscaling-config")]
    return config["data"]


def test_overlays_exist() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]],
                                                      overlay: str) -> None:
    docs = rendered[overlay]
    crds = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            crds.append(doc)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert {"ScaledObject", "TriggerAuthentication"} <= {d["kind"] for d in crds}
    for doc in crds:
        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


def test_production_gateway_serves_tls_from_cert_manager(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["production"]
    (certificate,) = _named(docs, "Certificate").values()
    pod = _named(docs, "Deployment")["upscaling-gateway"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for name in ("GATEWAY_TLS_CERT", "GATEWAY_TLS_KEY"):
        folder, _, file = env[name].rpartition("/")
        assert volumes[mounts[folder]]["secret"]["secretName"] == certificate["spec"]["secretName"]
        assert file in ("tls.crt", "tls.key")
    assert "GATEWAY_PLAINTEXT_HTTP_PORT" not in env and "GATEWAY_PLAINTEXT_GRPC_PORT" not in env
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe] == {**container[probe], "httpGet": {"path": "/health", "port": "http",
                                                                     "scheme": "HTTPS"}}, probe
    assert pod["metadata"]["annotations"]["prometheus.io/scheme"] == "https"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_dispatchers_on_the_job_queue(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    (scaled,) = _named(docs, "ScaledObject").values()
    spec = scaled["spec"]
    target = _named(docs, "Deployment")[spec["scaleTargetRef"]["name"]]
    assert target["spec"]["template"]["spec"]["containers"][0]["args"] == ["dispatcher"]
    assert "replicas" not in target["spec"], "KEDA owns the dispatcher count"
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["metadata"]["queueName"] == Topology(prefix=_config(docs)["BROKER_PREFIX"]).jobs_queue
    auth = _named(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host" and ref["key"] == "RABBITMQ_URL"
    secrets = _named(docs, "Secret")
    if ref["name"] not in EXTERNAL_SECRETS.get(overlay, set()):
        assert ref["key"] in secrets[ref["name"]]["stringData"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_hardened_probed_and_scraped(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    services = {c["args"][0] for d in workloads for c in d["spec"]["template"]["spec"]["containers"]}
    assert {"gateway", "tiler", "dispatcher", "monitor", "accounts"} <= services
    for workload in workloads:
        pod = workload["spec"]["template"]
        name = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for container in pod["spec"]["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], name
            if workload["kind"] == "Deployment":
                assert "readinessProbe" in container and "livenessProbe" in container, name
        if workload["kind"] == "Deployment" and pod["spec"]["containers"][0]["args"] != ["local-openeo"]:
            annotations = pod["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    deployments = {d["spec"]["template"]["spec"]["containers"][0]["args"][0]: d["spec"]["template"]
                   for d in docs if d["kind"] == "Deployment"}
    gateway = deployments["gateway"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health"
    assert deployments["gateway"]["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    for service, port_env, metrics in (("tiler", "TILER_PORT", "9101"),
                                       ("dispatcher", "DISPATCHER_HEALTH_PORT", "9102"),
                                       ("monitor", "MONITOR_HEALTH_PORT", "9103")):
        container = deployments[service]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert container["readinessProbe"]["grpc"]["port"] == int(env[port_env]), service
        assert container["livenessProbe"]["grpc"]["port"] == int(env[port_env]), service
        assert env["METRICS_PORT"] == metrics
        assert deployments[service]["metadata"]["annotations"]["prometheus.io/port"] == metrics


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_references_resolve(rendered: dict[str, list[dict[str, Any]]], overlay: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered[overlay]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    external = EXTERNAL_SECRETS.get(overlay, set())
    config = _config(docs)
    for key in config:
        assert key in ENV.values() or key in OTHER_ENV, f"{overlay}: unknown setting {key} in the ConfigMap"
    for workload in (d for d in docs if d["kind"] in ("Deployment", "Job")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source \
                    else ("Secret", source["secretRef"])
                assert (kind, ref["name"]) in names or ref["name"] in external, f"{overlay}: missing {ref}"
            for item in container.get("env", []):
                if container["args"] != ["local-openeo"]:
                    assert item["name"] in ENV.values() or item["name"] in OTHER_ENV, item["name"]
    # The backends parse as the services parse them, with every *_env secret supplied.
    secrets = {k: v for d in docs if d["kind"] == "Secret" for k, v in d.get("stringData", {}).items()}
    backends = json.loads(config["OPENEO_BACKENDS"])
    referenced = {v for b in backends for k, v in b.get("auth", {}).items() if k.endswith("_env")}
    assert referenced, "backend secrets come from the environment (*_env)"
    for name in referenced:
        if "upscaling-backend-credentials" not in external:
            assert name in secrets, f"{overlay}: secret {name} is not in upscaling-backend-credentials"
        monkeypatch.setenv(name, secrets.get(name, "from-the-external-secret"))
    monkeypatch.setenv("OPENEO_BACKENDS", config["OPENEO_BACKENDS"])
    assert load_backends().endpoints()


# --- compose -----------------------------------------------------------------------------------------------

def _compose_config(*files: str) -> dict[str, Any]:
    """The compose files as `podman-compose config` resolves them (interpolation, merges, validation)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: apt-get install -y podman (.ci/run does this)")
    tool = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "podman-compose"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}  # no interpolation from outside
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    out = subprocess.run([str(tool) if tool.exists() else "podman-compose", *args, "config"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """docker-compose.yml as `podman-compose config` resolves it."""
    return _compose_config("docker-compose.yml")


def test_compose_tls_override(compose_config: dict[str, Any]) -> None:
    """docker-compose.tls.yml turns TLS on for the gateway only, with its certificate and key as secrets."""
    services = _compose_config("docker-compose.yml", "docker-compose.tls.yml")["services"]
    gateway = services["gateway"]
    secrets = {s if isinstance(s, str) else s["source"] for s in gateway["secrets"]}
    assert {"gateway_tls_cert", "gateway_tls_key"} <= secrets
    assert gateway["environment"]["GATEWAY_TLS_CERT"] == "/run/secrets/gateway_tls_cert"
    assert gateway["environment"]["GATEWAY_TLS_KEY"] == "/run/secrets/gateway_tls_key"
    assert gateway["environment"]["TILER_ADDRESS"] == compose_config["services"]["gateway"]["environment"][
        "TILER_ADDRESS"]  # the rest of the gateway's settings stay
    assert gateway["healthcheck"]["test"][-1] == "https://127.0.0.1:8000/health"
    assert {name: s for name, s in services.items() if name != "gateway"} == \
        {name: s for name, s in compose_config["services"].items() if name != "gateway"}


def test_compose_services_health_checks_and_order(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) == APP_SERVICES | {"postgres", "rabbitmq"}
    for name, service in services.items():
        if name not in ("migrate", "accounts"):  # one-shots
            assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["rabbitmq"]["healthcheck"]["test"][1:3] == ["rabbitmq-diagnostics", "-q"]
    for name in ("tiler", "dispatcher", "monitor"):
        assert services[name]["healthcheck"]["test"][1:4] == ["upscaling", "health", "grpc"], name
    assert services["gateway"]["healthcheck"]["test"][1:] == ["upscaling", "health", "http",
                                                              "http://127.0.0.1:8000/health"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("dispatcher", "monitor", "gateway"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert all(d["condition"] in ("service_healthy", "service_completed_successfully")
                   for d in depends.values()), name
    assert services["gateway"]["depends_on"]["tiler"] == {"condition": "service_healthy"}


def test_compose_ports_scaling_image_and_environment(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert {"8000:8000", "50051:50051"} <= set(services["gateway"]["ports"])
    dispatcher = services["dispatcher"]
    assert "container_name" not in dispatcher and "ports" not in dispatcher, "--scale dispatcher=3 must work"
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, "one image for every Python service"
    for name in APP_SERVICES:
        assert services[name]["command"][0] == name
        assert services[name]["build"]["args"] == ["BASE_IMAGE=python:3.11-slim"]
        assert services[name]["read_only"] is True
    for name in APP_SERVICES - {"local-openeo"}:
        for key in services[name]["environment"]:
            assert key in ENV.values() or key in OTHER_ENV or key == "LOCAL_OPENEO_PASSWORD", f"{name}: {key}"
        assert services[name]["environment"]["MIGRATE_ON_START"] == "false"
    assert services["gateway"]["environment"]["TILER_ADDRESS"] == "tiler:50052"
    backends = json.loads(services["gateway"]["environment"]["OPENEO_BACKENDS"])
    assert backends[0]["endpoint"].startswith("http://local-openeo:8081/")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    assert set(compose_config["volumes"]) == {"pgdata", "rabbitmqdata"}


# --- least privilege: one account per service --------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_reads_only_its_own_account(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """The admin URLs (`upscaling-connections`) reach only the provisioning Job; each service has its own Secret."""
    docs = rendered[overlay]
    secret_refs: dict[str, set[str]] = {}
    for workload in (d for d in docs if d["kind"] in ("Deployment", "Job")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            secret_refs[container["args"][0]] = {s["secretRef"]["name"] for s in container.get("envFrom", [])
                                                 if "secretRef" in s}
    assert {"upscaling-connections", "upscaling-account-passwords"} <= secret_refs["accounts"]
    for service in accounts.SERVICES:
        assert f"upscaling-{service}-account" in secret_refs[service], service
        assert not secret_refs[service] & {"upscaling-connections", "upscaling-account-passwords"}, service
    assert not {r for r in secret_refs["tiler"] if r.endswith("-account") or r == "upscaling-connections"}
    secrets = _named(docs, "Secret")
    for service in accounts.SERVICES:  # the dev values: the account name the tool gives, the password it is given
        name = f"upscaling-{service}-account"
        if name in EXTERNAL_SECRETS.get(overlay, set()):
            continue
        data = secrets[name]["stringData"]
        password = secrets["upscaling-account-passwords"]["stringData"][accounts.PASSWORD_ENV[service]]
        (account,) = accounts.accounts("upscaling", {service: password}, [service])
        for key in ("DATABASE_URL", "RABBITMQ_URL"):
            assert data[key] == accounts.service_url(secrets["upscaling-connections"]["stringData"][key], account)


def test_compose_services_connect_with_their_own_accounts(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    admin = services["accounts"]["environment"]
    assert services["migrate"]["environment"]["DATABASE_URL"] == admin["DATABASE_URL"]
    assert services["accounts"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for service in accounts.SERVICES:
        env = services[service]["environment"]
        assert services[service]["depends_on"]["accounts"] == {"condition": "service_completed_successfully"}
        (account,) = accounts.accounts("upscaling", {service: admin[accounts.PASSWORD_ENV[service]]}, [service])
        for key in ("DATABASE_URL", "RABBITMQ_URL"):
            assert env[key] == accounts.service_url(admin[key], account), (service, key)
    assert "DATABASE_URL" not in services["tiler"]["environment"]
    assert "RABBITMQ_URL" not in services["tiler"]["environment"]
