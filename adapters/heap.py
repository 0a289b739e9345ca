"""The C heap's reuse of freed memory: opt-in for ``syncref serve``, on in the bench's clients
(ADR-0020).

A replay of the budget (20,000 events) is a message of ~6.6 MB.  It used to be copied whole four
times on its way to the socket (the row list, the message body, the compression tag, the
WebSocket frame); since the ADR-0020 addendum the last three are gone (the frame goes to the
socket as parts, ``adapters/server.py`` ``write_frames``) and the row list's join is the one
copy left.  glibc's ``malloc`` serves a block that large by ``mmap`` (or from the top of the heap,
trimmed back to the system when freed), so such a copy lands on fresh pages: measured, ~1,630
minor page faults and 5-8 ms per copy on the bench machine, against 0.7 ms for the copy itself
in reused memory (docs/performance.md, "Replay: ...").

:func:`keep_freed_heap` sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` so that blocks
under the limit come from the heap and up to the limit of freed memory stays in the process for
the next replay.  The price is RSS: the freed memory of every burst, not only replays', stays --
measured, the memory workload's bytes per retained event went from ~290 to ~450 (100,000 events:
~16 MB kept).  So ``syncref serve`` leaves the allocator alone unless asked:
``SYNCREF_HEAP_KEEP_MIB`` = 1..32 (glibc caps the mmap threshold at 32 MiB on 64-bit).  The bench's
client processes turn it on (32 MiB) for every peer, so a client copying a large frame does not
pay page faults the other peer's client does not.  An operator's own ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` wins: then nothing is changed.  On a C library without ``mallopt``
(musl, macOS) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
DEFAULT_KEEP_MIB = 0  # syncref serve: glibc's own defaults unless SYNCREF_HEAP_KEEP_MIB asks
CLIENT_KEEP_MIB = 32  # the bench's client processes
MAX_KEEP_MIB = 32  # glibc: HEAP_MAX_SIZE / 2 on 64-bit; a larger mmap threshold is refused


def keep_mib(env: Mapping[str, str], default: int = DEFAULT_KEEP_MIB) -> int:
    """The limit in MiB the environment asks for, ``default`` if it asks nothing (0: leave the
    allocator alone)."""
    if "MALLOC_MMAP_THRESHOLD_" in env or "MALLOC_TRIM_THRESHOLD_" in env:
        return 0
    text = env.get("SYNCREF_HEAP_KEEP_MIB", "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"SYNCREF_HEAP_KEEP_MIB must be an integer 0..{MAX_KEEP_MIB}, got {text!r}") from None
    if not 0 <= value <= MAX_KEEP_MIB:
        raise ValueError(f"SYNCREF_HEAP_KEEP_MIB must be an integer 0..{MAX_KEEP_MIB}, got {value}")
    return value


def keep_freed_heap(env: Mapping[str, str] | None = None, default: int = DEFAULT_KEEP_MIB) -> int:
    """Apply :func:`keep_mib` of ``env`` (default ``os.environ``) with ``mallopt``; returns the
    limit set in MiB, 0 when nothing was changed."""
    mib = keep_mib(os.environ if env is None else env, default)
    if not mib:
        return 0
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return 0
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    limit = mib * 1024 * 1024
    if mallopt(M_MMAP_THRESHOLD, limit) != 1 or mallopt(M_TRIM_THRESHOLD, limit) != 1:
        return 0
    return mib
