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


@dataclass(frozen=True)
class Runtime:
    """What the runtime hands every service's build(): the shared settings."""

    mesh: MeshSettings
    redis: RedisSettings
    database: DatabaseSettings
    auth: AuthSettings


@dataclass
class BuiltService:
    """Everything the runtime needs from a built service."""

    servicer: object  # a subclass of the generated <Name>ServiceServicer
    probe: Callable[[], Awaitable[bool]] | None = None  # can its dependencies serve? (gRPC health)
    closers: list[Callable[[], object]] = field(default_factory=list)  # run in order at shutdown


@dataclass(frozen=True)
class ServicePackage(Generic[SettingsT]):
    entry: ServiceEntry  # the contract it serves
    settings: type[SettingsT]  # its own settings class (own env prefix)
    build: Callable[[SettingsT, Runtime], BuiltService | Awaitable[BuiltService]]  # async when it connects first
    reasons: type[enum.Enum]  # its domain's ErrorReason: mirrors the contract's (a test checks)
