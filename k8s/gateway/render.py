"""Render the gateway's Envoy config for Kubernetes from `mesh-envoy-config`'s generator.

    .venv/bin/python k8s/gateway/render.py           # rewrite the committed files
    .venv/bin/python k8s/gateway/render.py --check   # exit 1 if one of them is stale (tests/deploy runs it)

Writes k8s/gateway/envoy.yaml (cleartext front door: development), k8s/overlays/production/envoy.yaml
(the same, serving TLS from the Secret ml-serving-gateway-tls) and k8s/gateway/descriptor.binpb (a
copy of gen/descriptor.binpb: kustomize reads files only below a kustomization, and Envoy's
transcoder loads it from a ConfigMap).

The generator (ml_serving_tools.gateway) builds one config for a mesh that hosts every service in
one server. In Kubernetes each service is its own Deployment, so this script takes its config and
changes only what a cluster needs:
  * the one upstream becomes one cluster per service, `<service>-pods` (a headless Service: Envoy
    resolves every pod, health-checks each over gRPC and balances between them); each RPC route
    goes to its service's cluster; health, reflection and other native gRPC (the Open Inference
    Protocol's `inference.GRPCInferenceService`) go to Inference;
  * file paths become the pod's mount points (descriptor, JWKS and TLS Secrets);
  * a listener on :9902 serves only `/ready` and `/stats/prometheus` from the admin interface, which
    the generator keeps on loopback, for the kubelet's probes and Prometheus.
Issuer and audience are the mesh's own, read from k8s/base/config.yaml (one source for both).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from ml_serving_tools.devauth import ensure_dev_keys
from ml_serving_tools.gateway import generate
from ml_serving_tools.gateway.common import UPSTREAM_CLUSTER
from ml_serving_tools.gateway.tls import ServerTls
from mnbara.mlserving.catalog import SERVICES

K8S = Path(__file__).resolve().parents[1]
ROOT = K8S.parent
DESCRIPTOR_SOURCE = ROOT / "gen" / "descriptor.binpb"
DESCRIPTOR_COPY = K8S / "gateway" / "descriptor.binpb"
CONFIG_MAP = K8S / "base" / "config.yaml"
OUTPUTS = {"development": K8S / "gateway" / "envoy.yaml", "production": K8S / "overlays" / "production" / "envoy.yaml"}

NAMESPACE = "ml-serving"
MESH_PORT = 50051
LISTEN = "0.0.0.0:8000"
ADMIN = "127.0.0.1:9901"
OPS_PORT = 9902
OPS_PATHS = ("/ready", "/stats/prometheus")
DEFAULT_SERVICE = "inference"  # health, reflection, other native gRPC (the Open Inference Protocol)
# Where the Deployment mounts what the config names.
MOUNTS = {"descriptor": "/etc/envoy/descriptor/descriptor.binpb", "jwks": "/etc/envoy/jwks/jwks.json",
          "cert": "/etc/envoy/tls/tls.crt", "key": "/etc/envoy/tls/tls.key"}


def pods_host(service: str) -> str:
    return f"{service}-pods.{NAMESPACE}.svc.cluster.local"


def cluster_name(service: str) -> str:
    return f"mesh_{service}"


def mesh_auth_settings() -> dict[str, str]:
    for doc in yaml.safe_load_all(CONFIG_MAP.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "ml-serving-config":
            return doc["data"]
    raise SystemExit(f"{CONFIG_MAP}: no ConfigMap ml-serving-config")


def service_of(path: str) -> str:
    """The mesh service (MESH_SERVICES name) an RPC path belongs to: its package names it."""
    for entry in SERVICES:
        if path.startswith(f"/mnbara.mlserving.{entry.name}."):
            return entry.name
    return DEFAULT_SERVICE


def split_upstream(config: dict) -> None:
    clusters = config["static_resources"]["clusters"]
    template = next(c for c in clusters if c["name"] == UPSTREAM_CLUSTER)
    clusters.remove(template)
    for entry in SERVICES:
        cluster = copy.deepcopy(template)
        cluster["name"] = cluster["load_assignment"]["cluster_name"] = cluster_name(entry.name)
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": pods_host(entry.name), "port_value": MESH_PORT}}}}]}]
        clusters.append(cluster)
    for route in _routes(config):
        if route.get("route", {}).get("cluster") == UPSTREAM_CLUSTER:
            match = route["match"]
            route["route"]["cluster"] = cluster_name(service_of(match.get("path") or match.get("prefix", "")))


def _routes(config: dict) -> list[dict]:
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return [r for host in hcm["route_config"]["virtual_hosts"] for r in host["routes"]]


def add_ops_listener(config: dict) -> None:
    host, _, port = ADMIN.rpartition(":")
    config["static_resources"]["clusters"].append({
        "name": "envoy_admin", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "envoy_admin", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]}})
    routes = [{"name": path, "match": {"path": path}, "route": {"cluster": "envoy_admin", "timeout": "5s"}}
              for path in OPS_PATHS]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ops",
        "route_config": {"name": "ops", "virtual_hosts": [{"name": "ops", "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    config["static_resources"]["listeners"].append({
        "name": "ops", "address": {"socket_address": {"address": "0.0.0.0", "port_value": OPS_PORT}},
        # Probes and scrapes still answer when the front door is at its connection cap.
        "ignore_global_conn_limit": True,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]})


def replace_strings(node: object, replacements: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {key: replace_strings(value, replacements) for key, value in node.items()}
    if isinstance(node, list):
        return [replace_strings(value, replacements) for value in node]
    if isinstance(node, str):
        return replacements.get(node, node)
    return node


def render(variant: str) -> str:
    settings = mesh_auth_settings()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch).resolve()
        jwks = ensure_dev_keys(scratch / "auth").jwks  # stands for the Secret's file: only its path is kept
        tls = None
        if variant == "production":
            (scratch / "tls.crt").write_text("placeholder")
            (scratch / "tls.key").write_text("placeholder")
            tls = ServerTls(scratch / "tls.crt", scratch / "tls.key")
        auth = generate.JwtAuth(issuer=settings["AUTH_ISSUER"], audiences=(settings["AUTH_AUDIENCE"],),
                                jwks_file=Path(jwks))
        config = generate.build_config(DESCRIPTOR_SOURCE, LISTEN, f"{pods_host(DEFAULT_SERVICE)}:{MESH_PORT}",
                                       ADMIN, auth=auth, tls=tls)
        config = replace_strings(config, {
            str(DESCRIPTOR_SOURCE.resolve()): MOUNTS["descriptor"], str(Path(jwks).resolve()): MOUNTS["jwks"],
            str(scratch / "tls.crt"): MOUNTS["cert"], str(scratch / "tls.key"): MOUNTS["key"]})
    split_upstream(config)
    add_ops_listener(config)
    header = (f"# Rendered by k8s/gateway/render.py ({variant}) from mesh-envoy-config's generator; do not edit.\n"
              "# Regenerate: .venv/bin/python k8s/gateway/render.py\n"
              "# Compact JSON (which YAML reads as is): `kubectl apply` keeps a copy of each object in an\n"
              "# annotation of at most 256 KiB, which the same config as block YAML would exceed.\n")
    return header + json.dumps(config, separators=(",", ":")) + "\n"


def stale_files() -> list[Path]:
    stale = [path for variant, path in OUTPUTS.items() if not path.is_file() or path.read_text() != render(variant)]
    if not DESCRIPTOR_COPY.is_file() or DESCRIPTOR_COPY.read_bytes() != DESCRIPTOR_SOURCE.read_bytes():
        stale.append(DESCRIPTOR_COPY)
    return stale


def write_all() -> None:
    for variant, path in OUTPUTS.items():
        path.write_text(render(variant))
    shutil.copyfile(DESCRIPTOR_SOURCE, DESCRIPTOR_COPY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run .venv/bin/python k8s/gateway/render.py)", file=sys.stderr)
        return 1 if stale else 0
    write_all()
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in [*OUTPUTS.values(), DESCRIPTOR_COPY]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
