"""The Nostr client's exceptions, split by blame like the rest of syncref.

``NostrUsageError`` (a ``LocalProtocolError`` and a ``ValueError``) is this side's mistake: an
event field out of range, a relay URL that is not ``ws://``/``wss://``, a signing-key file that is
missing, readable by others or malformed.  ``RelayProtocolError`` (a ``RemoteProtocolError``) is
the relay's: a frame that is not one of the relay messages NIP-01 defines, or an event that fails
verification.  The message parser raises nothing else, whatever bytes arrive.  ``RelayUnavailable``
is neither side's fault: the relay could not be reached, the connection dropped, or no answer came
in time.  Every message is a
single line that names what was wrong, so an operator can act on a log line without a traceback.
"""

from __future__ import annotations

from spec.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "EventVerificationError",
    "KeyFileError",
    "NostrUsageError",
    "RelayProtocolError",
    "RelayUnavailable",
    "one_line",
]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one printable line of at most ``limit`` characters (for errors and logs)."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class NostrUsageError(LocalProtocolError, ValueError):
    """The caller or its configuration erred (bad event field, relay URL, key file)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class KeyFileError(NostrUsageError):
    """The signing-key file is missing, unreadable, readable by others, or not a secp256k1 key."""


class RelayProtocolError(RemoteProtocolError):
    """A relay sent something that is not a valid NIP-01 relay message (one-line ``str``)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class EventVerificationError(RelayProtocolError):
    """An event's id is not the hash of its content, or its signature does not verify."""


class RelayUnavailable(Exception):
    """The relay could not be reached, the connection ended, or it did not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))
