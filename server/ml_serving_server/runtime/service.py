"""How a service plugs into the runtime: what it declares, and what its build() returns.

Each service package (services/<name>/__init__.py) exports one `SERVICE`, a
ServicePackage naming its contract (a catalog row), its settings class and its build
function; app.py lists those packages, one line each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, TypeVar

from mnbara.mlserving.catalog import ServiceEntry

from .settings import AuthSettings, DatabaseSettings, MeshSettings, RedisSettings, SettingsBase

SettingsT = TypeVar("SettingsT", bound=SettingsBase)


class ListeningPort:
    """The port this server listens on, known once it has started (a service calling another in
    the same process dials it; MESH_GRPC_ADDR may ask for port 0)."""

    def __init__(self) -> None:
        self.port: int | None = None

    def addr(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not started listening yet")
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Runtime:
    """What the runtime hands every service's build(): the shared settings, and this server's port."""

    mesh: MeshSettings
    redis: RedisSettings
    database: DatabaseSettings
    auth: AuthSettings
    listening: ListeningPort = field(default_factory=ListeningPort, compare=False)


@dataclass
class BuiltService:
    """Everything the runtime needs from a built service."""

    servicer: object  # a subclass of the generated <Name>ServiceServicer
    probe: Callable[[], Awaitable[bool]] | None = None  # can its dependencies serve? (gRPC health)
    # Other contracts this service also serves (a standard protocol, its REST form), each a catalog-
    # shaped row (the service's own name, error domain and reasons) and its servicer.
    companions: list[tuple[ServiceEntry, object]] = field(default_factory=list)
    # Does the probe also speak for the whole server (health service "", which Envoy checks)? False
    # for a dependency only this service uses: the others keep serving through the front door.
    probe_gates_server: bool = True
    closers: list[Callable[[], object]] = field(default_factory=list)  # run in order at shutdown
    # Run when the server starts draining, before it waits for calls in flight: end what never
    # ends by itself (a server stream, a background task that calls this server).
    stopping: list[Callable[[], object]] = field(default_factory=list)


@dataclass(frozen=True)
class ServicePackage(Generic[SettingsT]):
    entry: ServiceEntry  # the contract it serves
    settings: type[SettingsT]  # its own settings class (own env prefix)
    build: Callable[[SettingsT, Runtime], BuiltService | Awaitable[BuiltService]]  # async when it connects first
    reasons: type[enum.Enum]  # its domain's ErrorReason: mirrors the contract's (a test checks)
