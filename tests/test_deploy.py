"""The Kubernetes manifests agree with the server and the image: every setting they pass exists
and parses, the probes hit the port the server listens on, the pod outlives the server's own
drain, it runs as the image's non-root user, and the context volume is where the server saves."""

import re
from dataclasses import fields
from pathlib import Path

import pytest

from shapley_svc.server.settings import ENV_PREFIX, Settings, settings_from

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"


def _documents() -> dict[str, dict]:
    documents = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            name = document.get("metadata", {}).get("name", path.stem)
            documents[f"{document['kind']}/{name}"] = document
    return documents


DOCUMENTS = _documents()
SETTINGS = DOCUMENTS["ConfigMap/shapley-svc"]["data"]
POD = DOCUMENTS["Deployment/shapley-svc"]["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]


def test_every_setting_exists_and_parses():
    known = {ENV_PREFIX + field.name.upper() for field in fields(Settings)}
    assert set(SETTINGS) <= known, set(SETTINGS) - known
    settings = settings_from([], environ=SETTINGS)
    assert settings.context_dir == SETTINGS[ENV_PREFIX + "CONTEXT_DIR"]


def test_probes_and_services_use_the_port_the_server_listens_on():
    settings = settings_from([], environ=SETTINGS)
    port = int(settings.address.rsplit(":", 1)[1])
    ports = {entry["name"]: entry["containerPort"] for entry in CONTAINER["ports"]}
    assert ports["grpc"] == port
    assert ports["metrics"] == int(settings.metrics_address.rsplit(":", 1)[1])
    # Probes check the plaintext health port, on threads no Shapley call takes.
    health_port = int(settings.health_address.rsplit(":", 1)[1])
    assert ports["health"] == health_port != port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert CONTAINER[probe]["grpc"]["port"] == health_port, probe
    for name in ("Service/shapley-svc", "Service/shapley-svc-headless"):
        grpc_port = next(p for p in DOCUMENTS[name]["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["targetPort"] == "grpc" and grpc_port["port"] == port


def test_the_pod_outlives_the_servers_drain():
    settings = settings_from([], environ=SETTINGS)
    assert POD["terminationGracePeriodSeconds"] > (
        settings.drain_notice_seconds + settings.grace_seconds
    )


def test_it_runs_as_the_images_non_root_user():
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] == int(uid)
    assert CONTAINER["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_shared_volume_is_where_contexts_are_saved():
    mounts = {mount["name"]: mount["mountPath"] for mount in CONTAINER["volumeMounts"]}
    assert mounts["contexts"] == SETTINGS[ENV_PREFIX + "CONTEXT_DIR"]
    claim = next(v for v in POD["volumes"] if v["name"] == "contexts")
    claim_name = claim["persistentVolumeClaim"]["claimName"]
    assert DOCUMENTS[f"PersistentVolumeClaim/{claim_name}"]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_kustomization_lists_every_manifest():
    listed = set(DOCUMENTS["Kustomization/kustomization"]["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
