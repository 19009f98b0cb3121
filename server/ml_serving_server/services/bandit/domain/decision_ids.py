"""Self-contained decision ids for context-free selections.

Such an id carries what a reward needs (bandit, chosen arms, decision time) and an HMAC
over it with a key every replica shares, so Select writes no decision record and
Reward looks nothing up: nothing to lose, nothing to expire in the store. A forged,
truncated or foreign id fails the check and is simply an unknown decision.

    d1.<base64url(JSON [bandit, [arms], time_us, nonce])>.<base64url(HMAC-SHA256[:16])>

Contextual decisions keep a stored record instead (their context is too large for an id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone

from .model import Decision

PREFIX = "d1."
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_self_contained(decision_id: str) -> bool:
    return decision_id.startswith(PREFIX)


class DecisionCodec:
    def __init__(self, key: bytes):
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, bandit: str, arm_ids: tuple[str, ...], time: datetime) -> str:
        payload = json.dumps([bandit, arm_ids, int(time.timestamp() * 1_000_000), secrets.token_hex(6)],
                             separators=(",", ":")).encode()
        return f"{PREFIX}{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, decision_id: str) -> Decision | None:
        """The decision an id stands for, or None if this mesh did not issue it."""
        try:
            body, mac = decision_id[len(PREFIX):].split(".")
            payload = _unb64(body)
            if not hmac.compare_digest(_unb64(mac), self._mac(payload)):
                return None
            bandit, arm_ids, time_us, _nonce = json.loads(payload)
        except (ValueError, TypeError):
            return None
        return Decision(id=decision_id, bandit=bandit, arm_ids=tuple(arm_ids),
                        time=datetime.fromtimestamp(time_us / 1_000_000, timezone.utc))
