"""k8s/ renders with the real kubectl (kustomize), every object validates strictly against the
Kubernetes 1.24 and 1.33 schemas, and the production reviewer's list holds on every workload of
every render. Offline: no cluster is contacted."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml
from mnbara.mlserving.catalog import BY_NAME

from ml_serving_server.runtime.health import LIVENESS
from ml_serving_server.runtime.settings import MeshSettings

from .manifests import (
    K8S, KUSTOMIZATIONS, LOADER, LONG_RUNNING_KINDS, NAMESPACE, OVERLAYS, RENDER_SECONDS, SEED_FILES, effective, env_value,
    ident, image_problem, is_mesh_server, load_file, needs_kubectl, render, selects, workloads,
)

pytestmark = needs_kubectl

SCHEMA_VERSIONS = ("1.24.0", "1.33.0")  # the seed's minimum, and the newest kubernetes-validate 1.33.1 carries
README = K8S / "README.md"


# ----------------------------------------------------------------------------- rendering and schemas


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_renders(kustomization):
    objects = render(kustomization)
    assert objects, f"k8s/{kustomization} renders nothing"
    unplaced = [ident(o) for o in objects if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE]
    assert not unplaced, f"k8s/{kustomization}: objects outside namespace {NAMESPACE}: {unplaced}"


@pytest.mark.parametrize("path", SEED_FILES)
def test_seed_files_apply_on_their_own(path):
    """`kubectl apply -f k8s/<path>` alone: plain YAML (no kustomize), every object namespaced."""
    objects = load_file(path)
    assert objects, path
    for obj in objects:
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{path}: {ident(obj)} names no namespace"
        validate(obj, f"k8s/{path}")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendered_object_validates_strictly(version):
    """Each distinct object of base and both overlays (the overlays share most of them)."""
    seen = {}
    for kustomization in OVERLAYS:
        for obj in render(kustomization):
            seen.setdefault(json.dumps(obj, sort_keys=True), (obj, f"k8s/{kustomization}"))
    for obj, where in seen.values():
        validate(obj, where, (version,))


def validate(obj: dict, where: str, versions=SCHEMA_VERSIONS) -> None:
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{where}: {ident(obj)} is invalid for Kubernetes {version} at {path}: {error.message}")


def test_strict_validation_refuses_an_unknown_field():
    """The schema check can fail: a misspelt field is an error, not ignored."""
    deployment = next(o for o in render("base") if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[0], strict=True)


# ----------------------------------------------------------------------------- the reviewer's list


def all_workloads():
    return [(k, w) for k in OVERLAYS for w in workloads(render(k))]


def test_renders_hold_the_whole_mesh():
    """One Deployment per service (MESH_SERVICES that one), the gateway, workers, MLflow, TorchServe;
    the data services in development only."""
    for kustomization in OVERLAYS:
        names = {w.name for w in workloads(render(kustomization))}
        for service in BY_NAME:
            assert f"Deployment/{service}" in names, f"k8s/{kustomization}: no Deployment {service}"
            deployment = next(w for w in workloads(render(kustomization)) if w.name == f"Deployment/{service}")
            assert env_value(deployment.pod["containers"][0], "MESH_SERVICES") == service
        assert {"Deployment/gateway", "Deployment/retraining-worker", "Deployment/mlflow-server",
                "Deployment/torchserve"} <= names, f"k8s/{kustomization}: {sorted(names)}"
    data = {"StatefulSet/postgres", "StatefulSet/redis", "StatefulSet/minio"}
    assert data <= {w.name for w in workloads(render("overlays/development"))}
    assert not data & {w.name for w in workloads(render("overlays/production"))}


def test_every_container_is_locked_down():
    problems = []
    for kustomization, workload in all_workloads():
        pod = workload.pod
        if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{kustomization} {workload.name}: pod seccompProfile is not RuntimeDefault")
        for container in workload.containers:
            where = f"{kustomization} {workload.name} container {container['name']}"
            problems += [f"{where}: {p}" for p in container_problems(container, pod)]
    assert not problems, "\n".join(problems)


def container_problems(container: dict, pod: dict) -> list[str]:
    problems = []
    own = container.get("securityContext", {})
    if effective(container, pod, "runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    uid = effective(container, pod, "runAsUser")
    if not isinstance(uid, int) or uid == 0:
        problems.append(f"runAsUser is not an explicit non-root UID ({uid!r})")
    if own.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if own.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if "ALL" not in own.get("capabilities", {}).get("drop", []):
        problems.append("capabilities do not drop ALL")
    if not any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])):
        problems.append("no writable /tmp (an emptyDir) beside its read-only root")
    for kind in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(container.get("resources", {}).get(kind, {}))
        if missing:
            problems.append(f"resources.{kind} lacks {sorted(missing)}")
    problem = image_problem(container["image"])
    if problem:
        problems.append(f"image {container['image']} {problem}")
    return problems


def test_long_running_workloads_have_probes_spread_and_grace():
    problems = []
    for kustomization, workload in all_workloads():
        if workload.kind not in LONG_RUNNING_KINDS:
            continue
        where = f"{kustomization} {workload.name}"
        if not workload.pod.get("topologySpreadConstraints"):
            problems.append(f"{where}: no topologySpreadConstraints")
        for container in workload.containers:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe not in container:
                    problems.append(f"{where} container {container['name']}: no {probe}")
    assert not problems, "\n".join(problems)


def test_mesh_servers_probe_their_service_over_grpc():
    """Readiness asks the service's own gRPC health (NOT_SERVING when a dependency fails or it drains);
    liveness asks the name that stays SERVING through dependency outages (no restart for those)."""
    problems = []
    for kustomization, workload in all_workloads():
        for container in filter(is_mesh_server, workload.containers):
            where = f"{kustomization} {workload.name} container {container['name']}"
            service = env_value(container, "MESH_SERVICES")
            expected = BY_NAME[service].full_name if service in BY_NAME else None
            readiness = container.get("readinessProbe", {}).get("grpc")
            if readiness is None or readiness.get("service") != expected:
                problems.append(f"{where}: readinessProbe is not gRPC health of {expected}: {readiness}")
            if "grpc" not in container.get("startupProbe", {}):
                problems.append(f"{where}: startupProbe is not gRPC health")
            liveness = container.get("livenessProbe", {}).get("grpc")
            if liveness is None or liveness.get("service") != LIVENESS:
                problems.append(f"{where}: livenessProbe is not the gRPC health name {LIVENESS!r}: {liveness}")
            port = container_grpc_port(container)
            if readiness and readiness.get("port") != port:
                problems.append(f"{where}: readiness probes port {readiness.get('port')}, the server listens on {port}")
    assert not problems, "\n".join(problems)


def container_grpc_port(container: dict) -> int:
    addr = env_value(container, "MESH_GRPC_ADDR") or "0.0.0.0:50051"  # k8s/base/config.yaml's
    return int(addr.rpartition(":")[2])


def test_grace_period_outlasts_the_mesh_drain():
    """terminationGracePeriodSeconds > MESH_SHUTDOWN_DELAY_SECONDS + MESH_SHUTDOWN_GRACE_SECONDS,
    as the settings module declares them (or as a manifest overrides them)."""
    defaults = MeshSettings.model_fields
    problems = []
    for kustomization, workload in all_workloads():
        config = config_map(render(kustomization), "ml-serving-config")
        for container in filter(is_mesh_server, workload.containers):
            delay = float(setting(container, config, "MESH_SHUTDOWN_DELAY_SECONDS",
                                  defaults["shutdown_delay_seconds"].default))
            grace = float(setting(container, config, "MESH_SHUTDOWN_GRACE_SECONDS",
                                  defaults["shutdown_grace_seconds"].default))
            period = workload.pod.get("terminationGracePeriodSeconds", 30)
            if not period > delay + grace:
                problems.append(f"{kustomization} {workload.name}: terminationGracePeriodSeconds {period} <= "
                                f"drain {delay} + {grace} s")
    assert not problems, "\n".join(problems)


def config_map(objects, name: str) -> dict:
    return next((o.get("data", {}) for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name), {})


def setting(container: dict, config: dict, name: str, default):
    return env_value(container, name) or config.get(name) or default


def test_every_multi_replica_workload_has_a_disruption_budget():
    for kustomization in ("overlays/production", "base"):
        objects = render(kustomization)
        budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
        for workload in workloads(objects):
            if workload.replicas > 1:
                assert any(selects(b["spec"]["selector"], workload.labels) for b in budgets), \
                    f"{kustomization} {workload.name}: {workload.replicas} replicas and no PodDisruptionBudget"


def test_replicas_per_overlay():
    development = workloads(render("overlays/development"))
    assert all(w.replicas == 1 for w in development), [(w.name, w.replicas) for w in development if w.replicas != 1]
    for hpa in kinds(render("overlays/development"), "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] == hpa["spec"]["maxReplicas"] == 1, ident(hpa)
    production = {w.name: w.replicas for w in workloads(render("overlays/production"))}
    assert all(production[f"Deployment/{s}"] >= 3 for s in BY_NAME), production


def kinds(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


# ----------------------------------------------------------------------------- autoscaling


def test_autoscalers_target_deployments_and_adapter_metrics():
    rules = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-rules.yaml").read_text())
    served = {"Pods": {r["name"]["as"] for r in rules["rules"]},
              "External": {r["name"]["as"] for r in rules["externalRules"]}}
    for kustomization in OVERLAYS:
        objects = render(kustomization)
        deployments = {o["metadata"]["name"] for o in kinds(objects, "Deployment")}
        hpas = {h["metadata"]["name"]: h for h in kinds(objects, "HorizontalPodAutoscaler")}
        assert {"router", "inference", "torchserve", "retraining-worker"} <= set(hpas), sorted(hpas)
        for name, hpa in hpas.items():
            target = hpa["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment" and target["name"] in deployments, f"{kustomization} HPA {name}: {target}"
            for metric in hpa["spec"]["metrics"]:
                kind = metric["type"]
                if kind in served:
                    metric_name = metric[kind.lower()]["metric"]["name"]
                    assert metric_name in served[kind], f"HPA {name}: no adapter rule serves {kind} metric {metric_name}"
        for name in ("router", "inference", "torchserve"):
            types = {m["type"] for m in hpas[name]["spec"]["metrics"]}
            assert {"Resource", "Pods"} <= types, f"HPA {name} scales on {types}: CPU and request rate wanted"
        worker_metric = hpas["retraining-worker"]["spec"]["metrics"][0]
        assert worker_metric["external"]["metric"]["name"] == "mlserving_pipeline_retraining_queue_depth"


def test_adapter_rules_derive_from_metrics_the_mesh_exports():
    from ml_serving_server.runtime import observability

    rules = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-rules.yaml").read_text())
    series = {re.match(r"\w+", r["seriesQuery"]).group(0) for r in rules["rules"] + rules["externalRules"]}
    assert f"{observability.RPC_HANDLED._name}_total" in series  # the per-RPC counter, as exported


# ----------------------------------------------------------------------------- network policies


def test_network_policies_deny_by_default_and_cover_every_pod():
    for kustomization in OVERLAYS:
        objects = render(kustomization)
        policies = kinds(objects, "NetworkPolicy")
        default = [p for p in policies if p["spec"]["podSelector"] == {}
                   and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                   and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        assert default, f"{kustomization}: no default-deny NetworkPolicy"
        specific = [p for p in policies if p["spec"]["podSelector"]]
        for workload in workloads(objects):
            assert any(selects(p["spec"]["podSelector"], workload.labels) for p in specific), \
                f"{kustomization}: no NetworkPolicy names {workload.name}'s pods (only the default deny applies)"


def test_network_policy_peers_name_pods_that_exist():
    """A peer selector that matches no pod is a typo that silently blocks a path."""
    for kustomization in OVERLAYS:
        objects = render(kustomization)
        pods = [w.labels for w in workloads(objects)]
        for policy in kinds(objects, "NetworkPolicy"):
            for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
                for peer in rule.get("from", []) + rule.get("to", []):
                    if "namespaceSelector" in peer or "ipBlock" in peer:
                        continue
                    assert any(selects(peer["podSelector"], labels) for labels in pods), \
                        f"{kustomization} NetworkPolicy/{policy['metadata']['name']}: peer {peer} matches no pod"


def test_the_architecture_paths_are_open():
    """Spot checks of the edges README draws, through the rendered policies."""
    objects = render("overlays/development")
    for source, target, port in (("gateway", "router", 50051), ("router", "torchserve", 7070),
                                 ("inference", "registry", 50051), ("registry", "mlflow-server", 5000),
                                 ("retraining-worker", "postgres", 5432), ("bandit", "redis", 6379),
                                 ("torchserve", "minio", 9000)):
        assert allowed(objects, source, target, port), f"{source} -> {target}:{port} is not allowed"
    for source, target, port in (("bandit", "torchserve", 7070), ("gateway", "postgres", 5432),
                                 ("inference", "redis", 6379)):
        assert not allowed(objects, source, target, port), f"{source} -> {target}:{port} should be closed"


def allowed(objects, source: str, target: str, port: int) -> bool:
    labels = {w.labels["app.kubernetes.io/name"]: w.labels for w in workloads(objects)}
    policies = kinds(objects, "NetworkPolicy")

    def opens(direction: str, own: str, peer: str) -> bool:
        key = "from" if direction == "ingress" else "to"
        for policy in policies:
            if not selects(policy["spec"]["podSelector"], labels[own]):
                continue
            for rule in policy["spec"].get(direction, []):
                peers_ok = key not in rule or any(
                    "podSelector" in p and "namespaceSelector" not in p and selects(p["podSelector"], labels[peer])
                    for p in rule[key])
                ports_ok = "ports" not in rule or any(p.get("port") == port for p in rule["ports"])
                if peers_ok and ports_ok:
                    return True
        return False

    return opens("egress", source, target) and opens("ingress", target, source)


# ----------------------------------------------------------------------------- secrets


def documented_secrets() -> dict[str, set[str]]:
    """The Secrets k8s/README.md lists: rows `| \\`name\\` | \\`key\\`, \\`key\\` | ...`."""
    secrets = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`ml-serving-[a-z0-9-]+`", cells[0]):
            secrets[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[1]))
    return secrets


def secret_references(objects):
    for workload in workloads(objects):
        for container in workload.containers:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield workload.name, ref["name"], {ref["key"]}
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    yield workload.name, source["secretRef"]["name"], set()
        for volume in workload.pod.get("volumes", []):
            if "secret" in volume:
                yield workload.name, volume["secret"]["secretName"], {i["key"] for i in volume["secret"].get("items", [])}


def test_secrets_are_referenced_by_documented_name_only():
    documented = documented_secrets()
    assert documented, "k8s/README.md lists no Secret"
    for kustomization in OVERLAYS:
        for workload, name, keys in secret_references(render(kustomization)):
            assert name in documented, f"{kustomization} {workload}: Secret {name} is not in k8s/README.md"
            assert keys <= documented[name], f"{kustomization} {workload}: keys {keys - documented[name]} of " \
                                             f"{name} are not in k8s/README.md"


def test_no_secret_values_are_committed():
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=LOADER):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), f"{path}: a Secret with values"
            if isinstance(doc, dict) and doc.get("kind") == "Kustomization":
                assert "secretGenerator" not in doc, f"{path}: secretGenerator (secrets are created at install)"
    for kustomization in OVERLAYS:
        assert not kinds(render(kustomization), "Secret"), f"{kustomization} renders a Secret"


def test_render_time_is_reported(record_property):
    """Not a measurement to hold to: the time kubectl took per render, in the report."""
    for kustomization in KUSTOMIZATIONS:
        render(kustomization)
    record_property("render_seconds", dict(RENDER_SECONDS))
    print("kubectl kustomize seconds:", {k: round(v, 2) for k, v in RENDER_SECONDS.items()})
