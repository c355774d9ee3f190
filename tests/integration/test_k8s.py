"""deploy/k8s renders with kustomize for every region and every resource passes the Kubernetes schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.servers import need

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("us-east-1", "eu-west-1", "ap-southeast-1")
kv = pytest.importorskip("kubernetes_validate", reason="dev extra: kubernetes-validate")


def kustomize() -> str:
    found = shutil.which("kustomize") or shutil.which(str(ROOT / "build" / "tools" / "kustomize"))
    if not found:
        need(False, "kustomize missing: scripts/setup-system.sh test builds it into build/tools")
    return found


def render(overlay: str) -> list[dict]:
    out = subprocess.run([kustomize(), "build", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.integration
def test_every_rendered_resource_validates_strictly(rendered):
    _, docs = rendered
    for d in docs:
        kv.validate(d, kv.latest_version(), strict=True)


@pytest.mark.integration
def test_validation_catches_a_misspelt_field():
    with pytest.raises(kv.ValidationError):
        kv.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}},
                     kv.latest_version(), strict=True)


@pytest.mark.integration
def test_workers_take_region_and_node_selector_from_the_overlay(rendered):
    region, docs = rendered
    worker = by_kind(docs, "Deployment")["fnbench-worker"]
    pod = worker["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"topology.kubernetes.io/region": region}
    (cm,) = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("fnbench-region-")]
    assert cm["data"] == {"REGION": region}
    container = pod["containers"][0]
    assert container["args"][:3] == ["worker", "--region", "$(FNBENCH_REGION)"]
    env = {e["name"]: e.get("valueFrom", {}) for e in container["env"]}
    assert env["FNBENCH_REGION"]["configMapKeyRef"]["name"] == cm["metadata"]["name"]
    assert env["FNBENCH_BROKER"]["secretKeyRef"]["name"].startswith("fnbench-broker-")
    assert pod["terminationGracePeriodSeconds"] >= 10  # at least two flush intervals
    assert all(d["metadata"].get("namespace") == "fnbench" for d in docs if d["kind"] != "Namespace")


@pytest.mark.integration
def test_every_workload_is_non_root_with_limits_and_probes(rendered):
    _, docs = rendered
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(c["resources"]), c["name"]
            assert "livenessProbe" in c, c["name"]
            assert ":" in c["image"], f"{c['image']} is not pinned"


@pytest.mark.integration
def test_control_region_has_redis_with_auth_and_aof_and_provisioned_grafana():
    docs = render("us-east-1")
    redis = by_kind(docs, "StatefulSet")["redis"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and "--requirepass" in args
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    boards = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("fnbench-grafana-dashboards-")]
    assert boards[0]["data"]["fnbench.json"] == (ROOT / "grafana" / "dashboards" / "fnbench.json").read_text()
    mounts = {m["mountPath"] for m in by_kind(docs, "Deployment")["grafana"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards",
            "/var/lib/grafana/dashboards/fnbench"} <= mounts
    prom = by_kind(docs, "ConfigMap")
    (cfg,) = [c for n, c in prom.items() if n.startswith("fnbench-prometheus-config-")]
    assert "kubernetes_sd_configs" in cfg["data"]["prometheus.yml"]


@pytest.mark.integration
def test_worker_regions_run_no_control_plane():
    for region in ("eu-west-1", "ap-southeast-1"):
        names = {d["metadata"]["name"] for d in render(region)}
        assert not names & {"redis", "grafana", "fnbench-scheduler"}, region
