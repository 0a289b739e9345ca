"""Small file-system helpers shared by the adapters that write secrets to disk (the server's JWT key,
the bridge's Nostr key): after a file is created or renamed, its directory entry is made durable too."""

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
