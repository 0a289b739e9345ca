"""Small file-system helpers shared by the adapters that write secrets to disk (the server's JWT key,
the bridge's Nostr key): after a file is created or renamed, its directory entry is made durable too;
a data directory syncref creates is private to its user (:func:`make_data_dir`)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` so a file just created or renamed in it survives a power cut; best effort
    (a file system that cannot open or fsync a directory is not an error here)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_data_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents) if absent, the directory itself with mode 0700: it
    holds what the server shows only through grants (every payload, private rows, callers' claims).
    One that exists keeps its mode; parents get the default one."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
