"""What the Inference service needs from the Registry: which version a selector means.

Adapters raise these exceptions (never their library's own); the service maps them."""

from __future__ import annotations

from typing import Protocol

from .model import ResolvedVersion, Selector


class RegistryUnavailable(Exception):
    """The Registry cannot be reached or did not answer in time."""


class NotInRegistry(Exception):
    """The selector names nothing. `reason` is the Registry's own reason: MODEL_NOT_FOUND,
    VERSION_NOT_FOUND, ALIAS_NOT_FOUND or NO_VERSION_IN_STAGE."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message[:200]


class VersionResolver(Protocol):
    async def resolve(self, model_name: str, selector: Selector) -> ResolvedVersion:
        """Raises NotInRegistry, RegistryUnavailable."""

    async def presigned_url(self, artifact_uri: str, ttl_s: int) -> str:
        """A short-lived URL the model server can fetch the artifact from; raises ValueError
        for a URI it cannot serve (not in the artifact store)."""
