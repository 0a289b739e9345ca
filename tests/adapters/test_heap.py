"""``adapters.heap``: the C heap keeps freed replay-sized blocks when asked (ADR-0020).

The setting is pinned (off for the server, 32 MiB for the bench's clients, the operator's own glibc
variables win, bad values refused), and
its effect is checked as what it is meant to change -- minor page faults of copying a 6.6 MB
message four times, counted by the kernel in a fresh interpreter -- not as a timing.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from adapters import heap

COPIES = """
import resource, sys
from adapters.heap import keep_freed_heap
print(keep_freed_heap())
parts = [b"x" * 85000] * 79
def one():
    a = b"".join(parts); b = b"\\x00" + a; c = b"\\x82\\x7f12345678" + b; return len(b"".join((b"\\x01", c)))
for _ in range(3):
    one()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 10)
"""


def test_the_limit_and_who_decides_it() -> None:
    assert heap.keep_mib({}) == heap.DEFAULT_KEEP_MIB == 0  # syncref serve leaves glibc alone by default
    assert heap.keep_mib({}, heap.CLIENT_KEEP_MIB) == heap.CLIENT_KEEP_MIB == 32  # the bench's clients
    assert heap.keep_mib({"MALLOC_TRIM_THRESHOLD_": "1"}, 32) == 0
    assert heap.keep_mib({"SYNCREF_HEAP_KEEP_MIB": "8"}) == 8
    assert heap.keep_mib({"SYNCREF_HEAP_KEEP_MIB": "0"}) == 0
    assert heap.keep_mib({"MALLOC_TRIM_THRESHOLD_": "1"}) == 0  # the operator's own setting wins
    assert heap.keep_mib({"MALLOC_MMAP_THRESHOLD_": "1", "SYNCREF_HEAP_KEEP_MIB": "8"}) == 0
    for bad in ("33", "-1", "lots"):
        with pytest.raises(ValueError, match=r"SYNCREF_HEAP_KEEP_MIB must be an integer 0\.\.32"):
            heap.keep_mib({"SYNCREF_HEAP_KEEP_MIB": bad})


def _faults(keep: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"SYNCREF_HEAP_KEEP_MIB": keep}
    out = subprocess.run([sys.executable, "-c", COPIES], env=env, capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_copies_of_a_replay_sized_message_reuse_the_heap() -> None:
    set_to, kept = _faults("32")
    untouched, fresh = _faults("0")
    assert (set_to, untouched) == (32, 0)
    assert fresh >= 4 * 1000  # four copies of 6.6 MB on fresh pages: ~1,630 faults each
    assert kept < fresh // 10


def test_serve_refuses_a_bad_limit(tmp_path: object) -> None:
    env = dict(os.environ) | {"SYNCREF_HEAP_KEEP_MIB": "lots"}
    out = subprocess.run([sys.executable, "-m", "adapters.cli", "serve", "--dev", "--port", "0", "--data",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "SYNCREF_HEAP_KEEP_MIB must be an integer 0..32" in out.stderr
