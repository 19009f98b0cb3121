"""Who is calling, and may they: bearer JWTs checked by the mesh itself.

Envoy checks tokens at the front door; the mesh checks them again, so its direct gRPC
port is no back door. Each RPC's required scope comes from its contract (the
`mnbara.mlserving.auth.v1.required_scope` method option); a hosted RPC without one stops
the server from starting. Health checking and reflection need no token.

Verified tokens are cached until they expire, so a caller's steady stream of calls costs
one dictionary lookup each, not a signature check.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import grpc
import jwt
from mnbara.mlserving.auth.v1 import auth_pb2
from mnbara.mlserving.catalog import ServiceEntry

from ..errors import CommonReason
from .interceptors import _ScopeInterceptor
from .observability import subject_var
from .settings import AuthSettings
from .status import MESH_DOMAIN, rich_status

log = logging.getLogger("ml_serving_server.auth")

ALGORITHMS = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA"]  # never "none" nor HMAC
WWW_AUTHENTICATE = ("www-authenticate", 'Bearer realm="ml-serving-mesh"')


@dataclass(frozen=True)
class Identity:
    subject: str
    scopes: frozenset[str]
    expires_at: float


class Rejected(Exception):
    """The token is missing, malformed, expired, not ours, or lacks the scope."""

    def __init__(self, message: str, denied_scope: str = ""):
        super().__init__(message)
        self.message, self.denied_scope = message, denied_scope


class KeySource(Protocol):
    async def key_for(self, key_id: str | None) -> object: ...


class JwksFile:
    """Keys from a JWKS file, read again when it changes (key rotation without restart)."""

    def __init__(self, path: str):
        self._path, self._mtime, self._keys = path, 0.0, {}
        self._load()

    def _load(self) -> None:
        mtime = os.stat(self._path).st_mtime
        if mtime != self._mtime:
            keys = jwt.PyJWKSet.from_dict(json.loads(Path(self._path).read_bytes())).keys
            self._keys, self._mtime = {key.key_id: key.key for key in keys}, mtime

    async def key_for(self, key_id: str | None) -> object:
        if key_id not in self._keys:
            self._load()
        if key_id is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if key_id not in self._keys:
            raise Rejected("token signed with an unknown key")
        return self._keys[key_id]


class JwksUrl:
    """Keys from the issuer's JWKS endpoint, cached by PyJWT's client; fetched off the event loop."""

    def __init__(self, url: str):
        self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)

    async def key_for(self, key_id: str | None) -> object:
        try:
            return (await asyncio.to_thread(self._client.get_signing_key, key_id)).key
        except jwt.PyJWKClientError as exc:
            raise Rejected(f"cannot find the token's signing key ({type(exc).__name__})") from None


class TokenVerifier:
    def __init__(self, keys: KeySource, issuer: str, audience: str, leeway_s: float = 30.0,
                 cache_entries: int = 10_000, clock=time.time):
        self._keys, self._issuer, self._audience, self._leeway = keys, issuer or None, audience, leeway_s
        self._cache: collections.OrderedDict[str, Identity] = collections.OrderedDict()
        self._cache_entries, self._clock = cache_entries, clock

    async def verify(self, token: str) -> Identity:
        cached = self._cache.get(token)
        if cached is not None and cached.expires_at + self._leeway > self._clock():
            return cached
        identity = await self._decode(token)
        self._cache[token] = identity
        if len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)  # the oldest entry
        return identity

    async def _decode(self, token: str) -> Identity:
        try:
            key = await self._keys.key_for(jwt.get_unverified_header(token).get("kid"))
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, audience=self._audience, issuer=self._issuer,
                                leeway=self._leeway, options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Rejected("the token has expired") from None
        except jwt.InvalidTokenError as exc:  # bad signature, audience, issuer, format...
            raise Rejected(f"the token is not valid here ({type(exc).__name__})") from None
        return Identity(str(claims["sub"]), _scopes(claims), float(claims["exp"]))


def _scopes(claims: dict) -> frozenset[str]:
    """Scopes from `scope` (space-separated, RFC 8693) and/or `scp` (a list)."""
    scopes = set(str(claims.get("scope", "")).split())
    scp = claims.get("scp", [])
    scopes.update(scp.split() if isinstance(scp, str) else (str(s) for s in scp))
    return frozenset(scopes)


def caller() -> str:
    """The subject of the current RPC's verified token ("" when auth is off)."""
    return subject_var.get()


def required_scopes(entries: Iterable[ServiceEntry]) -> dict[str, str]:
    """'/pkg.Service/Method' -> its required scope, for every RPC of the given services."""
    scopes = {}
    for entry in entries:
        service = entry.messages.DESCRIPTOR.pool.FindServiceByName(entry.full_name)
        for method in service.methods:
            scope = method.GetOptions().Extensions[auth_pb2.required_scope]
            if not scope:
                raise ValueError(f"{method.full_name} declares no mnbara.mlserving.auth.v1.required_scope")
            scopes[f"/{entry.full_name}/{method.name}"] = scope
    return scopes


def verifier_from(settings: AuthSettings) -> TokenVerifier | None:
    """The verifier the settings ask for; None (with a warning) when auth is turned off."""
    if not settings.enabled:
        log.warning("AUTH_ENABLED=false: every caller may call every RPC; never expose this server")
        return None
    if bool(settings.jwks_file) == bool(settings.jwks_url):
        raise ValueError("auth is on: set exactly one of AUTH_JWKS_FILE and AUTH_JWKS_URL "
                         "(or AUTH_ENABLED=false to turn auth off explicitly)")
    keys = JwksFile(settings.jwks_file) if settings.jwks_file else JwksUrl(settings.jwks_url)
    return TokenVerifier(keys, settings.issuer, settings.audience, settings.clock_skew_seconds,
                         settings.token_cache_entries)


class AuthInterceptor(_ScopeInterceptor):
    """Refuses a call without a valid token carrying the RPC's scope (UNAUTHENTICATED,
    PERMISSION_DENIED with reason SCOPE_REQUIRED), and records the caller's subject."""

    def __init__(self, verifier: TokenVerifier, scopes: dict[str, str], domains: dict[str, str]):
        self._verifier, self._scopes, self._domains = verifier, scopes, domains

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method not in self._scopes:  # health, reflection: open
            return await continuation(handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        required = self._scopes[method]
        try:
            identity = await self._verifier.verify(_bearer_token(context))
            if required not in identity.scopes:
                raise Rejected(f"this call needs a token with scope {required}", denied_scope=required)
        except Rejected as rejected:
            await context.abort_with_status(self._status(method, rejected))
        subject_var.set(identity.subject)
        yield

    def _status(self, method: str, rejected: Rejected) -> grpc.Status:
        domain = self._domains.get(method.lstrip("/").partition("/")[0], MESH_DOMAIN)
        if rejected.denied_scope:
            return rich_status(grpc.StatusCode.PERMISSION_DENIED, rejected.message, CommonReason.SCOPE_REQUIRED.name,
                               domain, {"scope": rejected.denied_scope})
        status = rich_status(grpc.StatusCode.UNAUTHENTICATED, rejected.message, CommonReason.UNAUTHENTICATED.name,
                             domain)
        # grpcio-status builds the status as a namedtuple: add the header to its trailers.
        return status._replace(trailing_metadata=(*status.trailing_metadata, WWW_AUTHENTICATE))


def _bearer_token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = (value if isinstance(value, str) else value.decode()).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Rejected("the authorization header must be `Bearer <token>`")
    raise Rejected("this call needs a bearer token (authorization: Bearer <token>)")
