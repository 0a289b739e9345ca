"""What the benchmark scripts share about the frames they read."""

from __future__ import annotations


def binary(frame: str | bytes) -> bytes:
    """The server sends binary frames only: a text frame here is a bug worth stopping on."""
    if not isinstance(frame, bytes):
        raise TypeError(f"expected a binary frame, got text: {frame[:80]!r}")
    return frame
