"""Development identities: a signing key pair, its JWKS, and bearer tokens signed with it.

`make up` creates them under the state directory, so the mesh is secure by default even
locally: Envoy (jwt_authn) and the mesh both verify tokens against `jwks.json`, and the
printed examples carry a token with every scope. Tests mint tokens the same way.

    keys = ensure_dev_keys(Path(".run/auth"))
    token = mint_token(keys, scopes=["bandit.read"], subject="alice")
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mnbara.mlserving.auth.v1 import auth_pb2
from mnbara.mlserving.catalog import SERVICES

DEV_ISSUER = "https://ml-serving-mesh.local/dev"
DEV_AUDIENCE = "ml-serving-mesh"
ALGORITHM = "ES256"


@dataclass(frozen=True)
class DevKeys:
    private_key_pem: Path
    jwks: Path
    key_id: str
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE


def ensure_dev_keys(folder: Path) -> DevKeys:
    """The key pair in `folder`, created (P-256) on first use."""
    folder.mkdir(parents=True, exist_ok=True)
    private_pem, jwks_path = folder / "signing-key.pem", folder / "jwks.json"
    if not (private_pem.exists() and jwks_path.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        key_id = uuid.uuid4().hex[:16]
        private_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        private_pem.chmod(0o600)
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwks_path.write_text(json.dumps({"keys": [{**public, "kid": key_id, "alg": ALGORITHM, "use": "sig"}]}))
    key_id = json.loads(jwks_path.read_text())["keys"][0]["kid"]
    return DevKeys(private_pem, jwks_path, key_id)


def all_scopes() -> list[str]:
    """Every scope any RPC of the mesh requires, from the contracts."""
    scopes = set()
    for entry in SERVICES:
        service = entry.messages.DESCRIPTOR.services_by_name[entry.full_name.rsplit(".", 1)[1]]
        scopes.update(m.GetOptions().Extensions[auth_pb2.required_scope] for m in service.methods)
    return sorted(scopes)


def mint_token(keys: DevKeys, scopes: list[str] | None = None, subject: str = "dev", ttl_seconds: int = 86_400,
               **claims: object) -> str:
    """A signed bearer token with `scope` (space-separated; default: every scope)."""
    now = int(time.time())
    payload = {"iss": keys.issuer, "aud": keys.audience, "sub": subject, "iat": now, "nbf": now - 5,
               "exp": now + ttl_seconds, "scope": " ".join(all_scopes() if scopes is None else scopes), **claims}
    return jwt.encode(payload, keys.private_key_pem.read_bytes(), algorithm=ALGORITHM, headers={"kid": keys.key_id})
