"""Self-contained decision ids: every selection's id carries what a reward needs.

An id holds the bandit, the chosen arms (their positions in the bandit's arm list, which
only ever grows), the decision time and, for a contextual selection, the context, with an
HMAC over it all under a key every replica shares. So no selection writes a decision record
and no reward looks one up: nothing to lose, nothing to expire in the store. A forged,
truncated or foreign id fails the check and is simply an unknown decision.

    d2.<base64url(payload)>.<base64url(HMAC-SHA256(payload)[:16])>

payload, little-endian: time_us int64, nonce 6 bytes, len(bandit) uint8, bandit (ASCII),
k uint16, k arm positions uint16, d uint16, d context values float64 (exact, as the
reward's update must use the very context that was scored).

Ids of the earlier form, d1.<base64url(JSON [bandit, [arm ids], time_us, nonce])>.<mac>,
still decode (`Decision.arm_ids` set, `arm_positions` empty).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
from datetime import datetime, timezone

import numpy as np

from .model import Decision

PREFIX, _LEGACY_PREFIX = "d2.", "d1."
_MAC_BYTES = 16
_HEAD = struct.Struct("<q6sB")  # time_us, nonce, len(bandit)
_COUNT = struct.Struct("<H")

MAX_ID_LENGTH = 6144
"""Longest id this codec issues: 128-character bandit, 1000 arms and a 256-value context
come to 5,548 characters (tests/bandit/unit/test_decision_ids.py)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_self_contained(decision_id: str) -> bool:
    return decision_id.startswith((PREFIX, _LEGACY_PREFIX))


class DecisionCodec:
    def __init__(self, key: bytes):
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, bandit: str, arm_positions: tuple[int, ...], time: datetime,
               context: np.ndarray | tuple[float, ...] = ()) -> str:
        name = bandit.encode()
        payload = b"".join((
            _HEAD.pack(int(time.timestamp() * 1_000_000), secrets.token_bytes(6), len(name)), name,
            _COUNT.pack(len(arm_positions)), np.asarray(arm_positions, dtype="<u2").tobytes(),
            _COUNT.pack(len(context)), np.asarray(context, dtype="<f8").tobytes(),
        ))
        return f"{PREFIX}{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, decision_id: str) -> Decision | None:
        """The decision an id stands for, or None if this mesh did not issue it."""
        try:
            prefix, body, mac = decision_id.split(".")
            payload = _unb64(body)
            if not hmac.compare_digest(_unb64(mac), self._mac(payload)):
                return None
            if prefix + "." == _LEGACY_PREFIX:
                return _legacy(decision_id, payload)
            return _decoded(decision_id, payload) if prefix + "." == PREFIX else None
        except (ValueError, TypeError, struct.error):
            return None


def _decoded(decision_id: str, payload: bytes) -> Decision:
    time_us, _nonce, name_length = _HEAD.unpack_from(payload)
    at = _HEAD.size
    bandit = payload[at:at + name_length].decode()
    at += name_length
    (k,) = _COUNT.unpack_from(payload, at)
    positions = np.frombuffer(payload, dtype="<u2", count=k, offset=at + _COUNT.size)
    at += _COUNT.size + 2 * k
    (d,) = _COUNT.unpack_from(payload, at)
    context = np.frombuffer(payload, dtype="<f8", count=d, offset=at + _COUNT.size)
    if at + _COUNT.size + 8 * d != len(payload):
        raise ValueError("trailing bytes")
    return Decision(id=decision_id, bandit=bandit, arm_ids=(), arm_positions=tuple(int(p) for p in positions),
                    context=tuple(float(v) for v in context), time=from_micros(time_us))


def _legacy(decision_id: str, payload: bytes) -> Decision:
    bandit, arm_ids, time_us, _nonce = json.loads(payload)
    return Decision(id=decision_id, bandit=bandit, arm_ids=tuple(arm_ids), time=from_micros(time_us))


def from_micros(time_us: int) -> datetime:
    return datetime.fromtimestamp(time_us / 1_000_000, timezone.utc)
