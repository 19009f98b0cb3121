"""Page tokens of the Router's lists: the (create_time, id) key of a page's last item, newest
first, as opaque URL-safe text; and page sizes."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from ....errors import InvalidArgument
from .errors import ErrorReason

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 512


def page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE_SIZE}, got {value}")
    return value


def encode(create_time: datetime | None, key: str) -> str:
    text = json.dumps([create_time.isoformat() if create_time else "", key])
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode(token: str) -> tuple[datetime, str] | None:
    """The key a page starts after; None for the first page."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError
        stamp, key = json.loads(base64.urlsafe_b64decode(token.encode()))
        at = datetime.fromisoformat(stamp)
        if not isinstance(key, str) or at.tzinfo is None:
            raise ValueError
        return at, key
    except (ValueError, TypeError, UnicodeDecodeError):
        raise bad_token() from None


def decode_position(token: str) -> int:
    """The position (a sequence or revision number) a page of an ordered trail starts after; 0 for
    the first page. Tokens are the decimal position of the previous page's last item."""
    if not token:
        return 0
    if len(token) > 20 or not token.isdigit():
        raise bad_token()
    return int(token)


def bad_token() -> InvalidArgument:
    return InvalidArgument("page_token", "is not a token this service issued", reason=ErrorReason.INVALID_PAGE_TOKEN)
