"""What the deployment tests share: rendering k8s/ with the real kubectl, walking the objects.

A render is cached per kustomization for the session: kubectl runs once per directory."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBECTL = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").is_file() else None)

OVERLAYS = ("base", "overlays/development", "overlays/production")
# Every kustomization that renders on its own (the Component renders through the development overlay).
KUSTOMIZATIONS = (*OVERLAYS, "mesh", "pipeline", "gateway", "mlflow", "torchserve", "model-versioning",
                  "autoscaling", "network-policies")
# The seed's paths: each applies on its own with `kubectl apply -f` in namespace ml-serving.
SEED_FILES = ("mlflow/mlflow-deployment.yaml", "torchserve/torchserve-deployment.yaml",
              "model-versioning/ab-experiments.yaml", "pipeline/ml-pipeline-deployment.yaml")
NAMESPACE = "ml-serving"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet")
MESH_IMAGE = "ml-serving-mesh"

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser: the gateway's config is large
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: cannot render k8s/ with kustomize")
RENDER_SECONDS: dict[str, float] = {}


@functools.cache
def render(kustomization: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize k8s/<kustomization>` renders (fails the test on an error)."""
    started = time.monotonic()
    result = subprocess.run([KUBECTL, "kustomize", str(K8S / kustomization)], capture_output=True, text=True,
                            timeout=60)
    RENDER_SECONDS[kustomization] = time.monotonic() - started
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize k8s/{kustomization} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=LOADER) if doc)


def load_file(relative: str) -> tuple[dict, ...]:
    return tuple(doc for doc in yaml.load_all((K8S / relative).read_text(), Loader=LOADER) if doc)


def ident(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass(frozen=True)
class Workload:
    obj: dict

    @property
    def name(self) -> str:
        return ident(self.obj)

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def template(self) -> dict:
        spec = self.obj["spec"]
        if self.kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        return spec["template"]

    @property
    def pod(self) -> dict:
        return self.template["spec"]

    @property
    def labels(self) -> dict:
        return self.template["metadata"].get("labels", {})

    @property
    def containers(self) -> list[dict]:
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    @property
    def replicas(self) -> int:
        return self.obj["spec"].get("replicas", 1) if self.kind in LONG_RUNNING_KINDS else 1


def workloads(objects) -> list[Workload]:
    return [Workload(o) for o in objects if o["kind"] in WORKLOAD_KINDS]


def effective(container: dict, pod: dict, key: str):
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def is_mesh_server(container: dict) -> bool:
    """A container running `ml-serving-mesh` (the image's entrypoint), not another command of the image."""
    image = container["image"].rsplit("/", 1)[-1]
    return image.split(":")[0] == MESH_IMAGE and container.get("command", ["ml-serving-mesh"])[0] == "ml-serving-mesh"


def env_value(container: dict, name: str) -> str | None:
    for var in container.get("env", []):
        if var["name"] == name and "value" in var:
            return var["value"]
    return None


def selects(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions In/NotIn/Exists) matches the labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# An exact version: 1.2.3, v1.40.0, 16.10-bookworm, 0.12.0-cpu, RELEASE.2025-04-22T22-12-26Z, or a digest.
EXACT_TAG = re.compile(r"^(v?\d+\.\d+(\.\d+)*([-.][A-Za-z0-9.]+)*|RELEASE\.\d{4}-\d{2}-\d{2}T[\d-]+Z)$")


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return "has no tag"
    if tag == "latest" or not EXACT_TAG.match(tag):
        return f"tag {tag!r} is not an exact version"
    return None
