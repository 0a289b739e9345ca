"""``syncref fuzz`` and structured Hypothesis fuzzing of the same targets.

The quick run here fuzzes every target (``SYNCREF_FUZZ_INPUTS`` inputs each, default 3000) and
requires zero crashes and zero hangs; the long run is ``syncref fuzz --inputs 200000`` (figures in
docs/reliability.md).  The harness itself is shown able to fail: a planted crash, a planted
unspecific error and a planted hang are each reported.  The Hypothesis tests draw structured
inputs (any bytes, any text including lone surrogates, token soups) for each target under the
same judge; ``SYNCREF_FUZZ_EXAMPLES`` raises their count."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.server import SYNCREF

from adapters.bsatn import BsatnError
from adapters.chaos.fuzz import TOKENS, Target, judge, run_fuzz, run_target, targets, targets_names

INPUTS = int(os.environ.get("SYNCREF_FUZZ_INPUTS", "3000"))
EXAMPLES = int(os.environ.get("SYNCREF_FUZZ_EXAMPLES", "100"))


@pytest.fixture(scope="module")
def all_targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    return targets(tmp_path_factory.mktemp("fuzzkeys"))


def test_every_target_survives_the_quick_run(tmp_path: Path) -> None:
    report = run_fuzz(INPUTS, 20261205, tmp_path)
    assert [t["target"] for t in report["targets"]] == targets_names()
    for t in report["targets"]:
        assert t["crashes"] == 0 and t["hangs"] == 0, t
        assert t["inputs"] == INPUTS and t["accepted"] + t["refused"] == INPUTS
        assert t["refused"] > 0 and t["accepted"] > 0, t  # the mutations reach both outcomes
    assert report["ok"] and report["inputs"] == INPUTS * len(targets_names())


def test_one_seed_one_input_sequence(tmp_path: Path) -> None:
    a, b = run_fuzz(400, 5, tmp_path, ["sql"]), run_fuzz(400, 5, tmp_path, ["sql"])
    c = run_fuzz(400, 6, tmp_path, ["sql"])
    key = [(t["accepted"], t["refused"]) for t in a["targets"]]
    assert key == [(t["accepted"], t["refused"]) for t in b["targets"]]
    assert key != [(t["accepted"], t["refused"]) for t in c["targets"]]


def test_a_planted_crash_an_unspecific_error_and_a_hang_are_reported() -> None:
    def buggy(data: bytes) -> object:
        if len(data) > 3 and data[3] == 0xFF:
            return data[10_000]  # IndexError: a crash
        if data[:1] == b"\x00":
            raise BsatnError("")  # allowed type, but says nothing
        if data[:1] == b"\x01":
            time.sleep(1)  # a hang under a 0.2 s limit
        raise BsatnError("bad input")

    t = Target("planted", [b"\x02abcdef", b"\x00", b"\x01"], buggy, (BsatnError,))
    res = run_target(t, 150, 3, hang_s=0.2)
    errors = [c["error"] for c in res.crashes]
    assert any("IndexError" in e for e in errors), errors[:5]
    assert any(e.startswith("unspecific") for e in errors)
    assert res.hangs >= 1 and any("hang" in e.lower() for e in errors)
    assert judge(t, b"\x02ok") is None  # an allowed, specific error is not a crash


def test_the_fuzz_command(tmp_path: Path) -> None:
    out = subprocess.run([str(SYNCREF), "fuzz", "--inputs", "300", "--target", "jwt", "--target", "sql", "--json",
                          str(tmp_path / "f.json")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["inputs"] == 600 and "fuzz: 600 inputs, 0 crashes, 0 hangs (seed 1): OK" in out.stdout
    bad = subprocess.run([str(SYNCREF), "fuzz", "--target", "nope"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "targets are" in bad.stderr


HYP = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SOUP = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=12).map("".join)


@pytest.mark.parametrize("name", ["bsatn_args", "bsatn_row", "client_frame", "server_frame"])
@HYP
@given(data=st.binary(max_size=400))
def test_binary_targets_on_any_bytes(all_targets: dict[str, Target], name: str, data: bytes) -> None:
    assert judge(all_targets[name], data) is None


@pytest.mark.parametrize("name", ["sql", "canonical_json", "jwt"])
@HYP
@given(text=st.one_of(st.text(), SOUP, st.integers(0xD800, 0xDFFF).map(chr)))
def test_text_targets_on_any_text(all_targets: dict[str, Target], name: str, text: str) -> None:
    assert judge(all_targets[name], text.encode("utf-8", "surrogatepass")) is None


@HYP
@given(prefix=st.sampled_from(["SELECT * FROM sync_event WHERE ", "SELECT * FROM ", "select * from sync_stream "]),
       soup=SOUP)
def test_sql_with_query_tricks(all_targets: dict[str, Target], prefix: str, soup: str) -> None:
    assert judge(all_targets["sql"], (prefix + soup).encode("utf-8", "surrogatepass")) is None


def test_the_client_frame_target_decodes_as_the_server_does(all_targets: dict[str, Target],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The server decodes client frames with ``max_queries`` (a ``Subscribe`` over it has its texts
    stepped over, not decoded: its own code path, fed by peers).  The fuzzer's ``client_frame``
    target must reach that path too, not only the decoder without the bound."""
    from adapters import wire

    real = wire.OverlongSubscribe
    made: list[object] = []

    def counting(*args: int) -> object:
        made.append(args)
        return real(*args)

    monkeypatch.setattr(wire, "OverlongSubscribe", counting)
    res = run_target(all_targets["client_frame"], 2000, 20261205)
    assert res.crashes == [] and len(made) > 0
