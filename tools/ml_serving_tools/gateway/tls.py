"""TLS: at the front door when given a certificate, and optionally mutual TLS to the mesh.

Without a certificate the front door speaks cleartext (HTTP/1.1 and h2c), the local
default. With one it speaks only TLS, offering h2 and http/1.1 by ALPN, so REST clients and
gRPC clients share it as before.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .common import ConfigError, typed

TLS_SOCKET = "envoy.transport_sockets.tls"
ALPN = ["h2", "http/1.1"]
MIN_TLS_VERSION = "TLSv1_2"


def _existing(path: Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found")
    return str(path.resolve())


@dataclass(frozen=True)
class ServerTls:
    """The front door's certificate chain and key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class UpstreamTls:
    """Mutual TLS to the mesh: Envoy's client certificate, and the CA the mesh's certificate must chain to."""

    ca: Path
    cert: Path
    key: Path
    server_name: str = ""  # SNI and the name the mesh's certificate must carry; default: the upstream host


def _certificate(cert: Path, key: Path) -> dict:
    return {"certificate_chain": {"filename": _existing(cert, "certificate")},
            "private_key": {"filename": _existing(key, "private key")}}


def downstream_transport_socket(tls: ServerTls) -> dict:
    return {"name": TLS_SOCKET, "typed_config": typed(
        "transport_sockets.tls.v3.DownstreamTlsContext",
        common_tls_context={
            "tls_params": {"tls_minimum_protocol_version": MIN_TLS_VERSION},
            "tls_certificates": [_certificate(tls.cert, tls.key)],
            "alpn_protocols": ALPN,
        },
    )}


def upstream_transport_socket(tls: UpstreamTls, upstream_host: str) -> dict:
    name = tls.server_name or upstream_host
    sni = {} if _is_ip(name) else {"sni": name}  # SNI carries host names only
    return {"name": TLS_SOCKET, "typed_config": typed(
        "transport_sockets.tls.v3.UpstreamTlsContext",
        **sni,
        common_tls_context={
            "tls_params": {"tls_minimum_protocol_version": MIN_TLS_VERSION},
            "tls_certificates": [_certificate(tls.cert, tls.key)],
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": _existing(tls.ca, "CA certificate")},
                "match_typed_subject_alt_names": [
                    {"san_type": "IP_ADDRESS" if _is_ip(name) else "DNS", "matcher": {"exact": name}},
                ],
            },
        },
    )}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
