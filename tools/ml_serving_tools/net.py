"""Loopback ports for the processes the tools start."""

from __future__ import annotations

import random
import socket

LOOPBACK = "127.0.0.1"

# Below Linux's ephemeral range (32768-60999): a port the OS picked with bind(0) can be handed to
# some outgoing connection before our process binds it, and under a busy test suite it was.
# Ports from this range are only ever taken by listeners, which the bind check sees.
_LISTEN_RANGE = (20000, 32767)
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now, not handed out before by this process."""
    for _ in range(200):
        port = random.randint(*_LISTEN_RANGE)
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: let the OS pick
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_open(host: str, port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
