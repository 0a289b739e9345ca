"""Loopback helpers shared by the tools that start processes of their own (chaos, bench,
conformance ``--local``, relays): one definition of "a free port"."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0).

    Another process can take it before the caller binds it; the callers start one server on it
    and fail loudly if it is taken, which is enough for loopback test rigs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
