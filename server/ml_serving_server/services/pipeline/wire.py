"""Small conversions every pipeline RPC module shares."""

from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime | None) -> Timestamp | None:
    """A time as a Timestamp (None stays None: the field is left unset)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(timezone.utc))
    return stamp
