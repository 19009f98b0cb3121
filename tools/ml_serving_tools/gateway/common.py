"""What every part of the Envoy config generator shares: its error, addresses, typed configs."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

EXTENSIONS = "type.googleapis.com/envoy.extensions"
UPSTREAM_CLUSTER = "mesh_grpc"


class ConfigError(Exception):
    """The inputs cannot produce a valid config (missing descriptor, bad address, an RPC without scope, ...)."""


def typed(type_name: str, **fields) -> dict:
    """A typed_config: ``typed("filters.http.router.v3.Router")`` for an extension's type."""
    prefix = "type.googleapis.com/" if type_name.startswith("envoy.") else f"{EXTENSIONS}."
    return {"@type": prefix + type_name, **fields}


def seconds(value: float) -> str:
    """A google.protobuf.Duration in YAML/JSON form ("1.5s")."""
    if value < 0:
        raise ConfigError(f"a duration cannot be negative: {value}")
    return f"{value:g}s"


class HostPort(NamedTuple):
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
        return cls(host, int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        return self.is_ip and ipaddress.ip_address(self.host).is_loopback

    def socket_address(self) -> dict:
        return {"socket_address": {"address": self.host, "port_value": self.port}}
