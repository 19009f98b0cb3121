"""Pages of the pipeline's lists (runs, schedules, rules, alerts): sizes, and tokens that are the
position (a stored sequence number) of the previous page's last item, in decimal."""

from __future__ import annotations

from ....errors import InvalidArgument
from .errors import ErrorReason

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000


def page_size(value: int) -> int:
    """The page size asked for (0: the default), checked."""
    if not 0 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE_SIZE}, got {value}")
    return value or DEFAULT_PAGE_SIZE


def position(token: str) -> int:
    """Where a page starts after; 0 for the first page."""
    if not token:
        return 0
    if len(token) > 20 or not token.isdigit():
        raise InvalidArgument("page_token", "is not a token this service issued", reason=ErrorReason.INVALID_PAGE_TOKEN)
    return int(token)


def token(after: int | None) -> str:
    """The next page's token; "" when there is none."""
    return "" if after is None else str(after)
