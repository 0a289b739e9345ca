"""The cyclic GC: its pauses on ``/metrics`` and ``syncref serve``'s freeze policy (ADR-0036)."""

from __future__ import annotations

import argparse
import gc
import signal
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.server import WireClient, http, running_server, serve_process

from adapters import gcpolicy


@pytest.fixture
def thawed_afterwards() -> Iterator[None]:
    """Whatever a test freezes is unfrozen again: the rest of the test process must not keep
    frozen cyclic garbage."""
    try:
        yield
    finally:
        gcpolicy.withdraw()
        gc.unfreeze()
        gc.collect()


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric's samples in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key[len(name):]] = float(value)
    return out


def test_a_forced_collection_shows_up_in_the_pause_histogram(tmp_path: Path) -> None:
    """``syncref_gc_pause_seconds{generation}``: a collection of generation 2 (and one of 0) made
    while the server runs is counted under its generation; the frozen-object gauge is there."""
    with running_server(tmp_path / "d") as st:
        def counts() -> dict[str, float]:
            return samples(http("GET", f"{st.base}/metrics").text, "syncref_gc_pause_seconds_count")
        before = counts()
        assert set(before) == {'{generation="0"}', '{generation="1"}', '{generation="2"}'}, before
        st.call(gc.collect)  # on the loop's thread: nothing else collects meanwhile there
        st.call(gc.collect, 0)
        after = counts()
        assert after['{generation="2"}'] >= before['{generation="2"}'] + 1
        assert after['{generation="0"}'] >= before['{generation="0"}'] + 1
        text = http("GET", f"{st.base}/metrics").text
        assert samples(text, "syncref_gc_frozen_objects") == {"": 0.0}  # no survivors policy in this process
        assert samples(text, "syncref_gc_thaws_total") == {"": 0.0}
        total = samples(text, "syncref_gc_pause_seconds_sum")
        assert total['{generation="2"}'] > 0
    # a stopped server's hook is gone: no callback of a dead server stays in the process
    assert not any(isinstance(cb, gcpolicy.GcPauses) for cb in gc.callbacks)


def _load(tmp_path: Path, text: str) -> Any:
    from adapters.commands import load_config
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    args = argparse.Namespace(dev=False, host=None, port=None, database=None, data=str(tmp_path))
    return load_config(conf, args)


def test_gc_freeze_defaults_to_survivors_and_is_checked(tmp_path: Path) -> None:
    from adapters.commands import ConfigError
    assert _load(tmp_path, "").gc_freeze == "survivors" == gcpolicy.DEFAULT_GC_FREEZE
    assert _load(tmp_path, '[server]\ngc_freeze = "start"\n').gc_freeze == "start"
    for bad in ('"never"', "1", "true"):
        with pytest.raises(ConfigError, match=r"\[server\] gc_freeze"):
            _load(tmp_path, f"[server]\ngc_freeze = {bad}\n")


@pytest.mark.parametrize(("config", "expected"), [("", "survivors"), ('[server]\ngc_freeze = "start"\n', "start")])
def test_serve_applies_the_configured_policy_after_recovery(tmp_path: Path, monkeypatch: Any, config: str,
                                                            expected: str) -> None:
    """``syncref serve`` hands ``[server] gc_freeze`` (default ``survivors``) to ``gcpolicy.apply``
    once it has started; then a SIGTERM stops it cleanly."""
    from adapters import cli

    applied: list[str] = []

    def apply(policy: str) -> None:
        applied.append(policy)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(gcpolicy, "apply", apply)
    conf = tmp_path / "c.toml"
    conf.write_text(config)
    assert cli.main(["serve", "--data", str(tmp_path / "d"), "--port", "0", "--config", str(conf)]) == 0
    assert applied == [expected]


def test_a_real_serve_reports_its_start_up_collection_and_policy(tmp_path: Path) -> None:
    """End to end: ``syncref serve``'s start-up collection (after recovery, before the listening
    line) is on ``/metrics`` as a generation-2 pause; the default policy's frozen count is there,
    and ``gc_freeze = "start"`` has none (no survivors hook)."""
    conf = tmp_path / "start.toml"
    conf.write_text('[server]\ngc_freeze = "start"\n')
    for name, extra, hooked in (("default", (), True), ("start", ("--config", str(conf)), False)):
        with serve_process(tmp_path / name, *extra) as served:
            text = http("GET", f"{served.url}/metrics").text
        assert samples(text, "syncref_gc_pause_seconds_count")['{generation="2"}'] >= 1, name
        frozen = samples(text, "syncref_gc_frozen_objects")[""]
        assert (frozen > 10_000) if hooked else (frozen == 0), (name, frozen)  # the interpreter alone: ~60,000


def test_survivors_freezes_what_a_full_collection_leaves(thawed_afterwards: None) -> None:
    gcpolicy.apply("survivors")
    hook = gcpolicy.active()
    assert hook is not None and hook in gc.callbacks
    young = [[i] for i in range(1000)]  # tracked, alive, born after the start-up freeze
    ids = {id(x) for x in young}
    assert len(ids & {id(o) for o in gc.get_objects()}) == 1000  # not frozen yet: the collector walks them
    frozen = gc.get_freeze_count()
    assert hook.frozen == frozen  # what apply() froze, counted as it froze it
    gc.collect()
    assert hook.freezes == 1
    assert gc.get_freeze_count() >= frozen + 1000
    assert hook.frozen == gc.get_freeze_count()  # nothing freed meanwhile: the count is exact
    assert not ids & {id(o) for o in gc.get_objects()}  # frozen: no later full pass walks them
    gcpolicy.apply("start")
    assert gcpolicy.active() is None and hook not in gc.callbacks


COUNT_ONLY: dict[str, Any] = {"max_age_s": float("inf"), "rss": lambda: None}  # no age or RSS thaw


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: freed only by the cyclic collector


def test_frozen_cyclic_garbage_is_bounded_under_churn(thawed_afterwards: None) -> None:
    """The leak the policy risks, made on purpose: 200 'connections' (a cycle of 50 objects each)
    alive at a full collection -- so frozen -- then dropped, as a connection that closes after a
    full pass.  Without the thaw the frozen set grew by ~10,000 objects (200 x 50) and the first
    connection's cycle was never freed; with it the frozen set stays within its bound and the
    next whole-heap pass frees them."""
    gcpolicy.withdraw()
    gc.collect()
    gc.freeze()
    hook = gcpolicy.FreezeSurvivors(growth=0.0, floor=2000)  # thaw after 2,000 objects frozen
    gc.callbacks.append(hook)
    base = gc.get_freeze_count()
    first: weakref.ref[Node] | None = None
    highest = 0
    try:
        for _ in range(200):
            conn = [Node() for _ in range(50)]
            if first is None:
                first = weakref.ref(conn[0])
            gc.collect()  # a full pass while it is alive: frozen
            del conn
            highest = max(highest, gc.get_freeze_count())
        gc.collect()  # a pass after the last thaw, if one is pending
        gc.collect()
    finally:
        gc.callbacks.remove(hook)
    # below the bound plus one cycle's worth and what the test itself allocates between passes
    assert highest - base <= 2000 + 50 * 2 + 500, (highest, base)
    assert hook.thaws >= 2
    assert first is not None and first() is None  # the first connection's cycle was freed


def test_a_real_connection_churn_keeps_the_frozen_set_bounded(tmp_path: Path, thawed_afterwards: None) -> None:
    """300 connect / subscribe / disconnect cycles, each connection alive at a full collection
    (the worst case: every one frozen while open), on the in-process server (asyncio's loop, whose
    socket transports are reference cycles; the client's objects share the process).  The frozen
    set stays under the policy's bound (a thaw once 3,000 survivors were frozen); without the thaw
    it grew by ~25 objects a cycle, ~7,500 after 300."""
    with running_server(tmp_path / "d") as st:
        tok = st.token()
        gcpolicy.withdraw()
        gc.collect()
        gc.freeze()
        hook = gcpolicy.FreezeSurvivors(growth=0.0, floor=3000)
        gc.callbacks.append(hook)
        base = gc.get_freeze_count()
        highest = 0
        try:
            for i in range(300):
                c = WireClient(st, tok)
                c.subscribe(1, f"SELECT * FROM sync_event WHERE stream_id = 'c{i % 10}'")
                st.call(gc.collect)
                c.close()
                highest = max(highest, gc.get_freeze_count())
        finally:
            gc.callbacks.remove(hook)
        assert highest - base <= 4500, (highest - base, hook.thaws)


def test_survivors_that_die_by_their_reference_count_cause_no_thaw(thawed_afterwards: None) -> None:
    """Objects alive at a full pass and freed afterwards by their reference count (a pipelined
    call's, a queued update's) leave the frozen set by themselves: the survivors' count goes past
    the bound, the recount finds no growth, and no whole-heap pass is made for them."""
    gcpolicy.withdraw()
    gc.collect()
    gc.freeze()
    hook = gcpolicy.FreezeSurvivors(growth=0.0, floor=2000, frozen=gc.get_freeze_count(), **COUNT_ONLY)
    gc.callbacks.append(hook)
    try:
        for _ in range(100):
            transient = [[i] for i in range(100)]  # no cycle: freed when dropped, frozen or not
            gc.collect()
            del transient
    finally:
        gc.callbacks.remove(hook)
    assert hook.freezes == 100 and hook.recounts >= 2  # 100 x ~100 survivors counted: past 2,000 often
    assert hook.thaws == 0, (hook.thaws, hook.since)


def test_a_start_that_fails_leaves_no_pause_hook(tmp_path: Path) -> None:
    """A server whose port is taken fails to start and is never stopped: its ``gc.callbacks`` hook
    must not stay behind (it would time every later collection of the process for nobody)."""
    import asyncio
    import socket

    from adapters.server import ServerConfig, SyncServer

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        server = SyncServer(ServerConfig(data_dir=tmp_path / "d", port=taken.getsockname()[1]))
        with pytest.raises(OSError):
            asyncio.run(server.start())
    finally:
        taken.close()
    assert server.gc_pauses not in gc.callbacks


def test_a_frozen_set_just_under_the_bound_is_not_recounted_at_every_pass(thawed_afterwards: None) -> None:
    """Live growth just under the bound, then many passes of transient survivors: each recount
    finds the set under the bound, and the next may come only after half a bound more survivors
    (a recount walks the whole frozen list: per pass, it would be the cost the policy avoids)."""
    gcpolicy.withdraw()
    gc.collect()
    gc.freeze()
    hook = gcpolicy.FreezeSurvivors(growth=0.0, floor=2000, frozen=gc.get_freeze_count(), **COUNT_ONLY)
    gc.callbacks.append(hook)
    try:
        kept = [[i] for i in range(1800)]  # live: the frozen set grows by ~1,800 for good
        gc.collect()
        for _ in range(100):
            transient = [[i] for i in range(50)]
            gc.collect()
            del transient
    finally:
        gc.callbacks.remove(hook)
    assert len(kept) == 1800 and hook.thaws == 0
    assert 1 <= hook.recounts <= 10, hook.recounts  # ~5,000 survivors counted: a recount per ~1,000


def test_frozen_cyclic_garbage_below_the_count_bound_is_freed_once_the_age_bound_passes(
        thawed_afterwards: None) -> None:
    """The count bound is in objects, not bytes: a few frozen objects can hold megabytes (a frame in
    an exception's traceback keeps its locals: a 404 or a reset WebSocket leaves 46-58 such objects,
    an oversized body's read() frame its buffer), and after a large recovery the bound is as large
    as the recovered heap.  So a whole-heap pass also comes once the last one is ``max_age_s`` old
    (a clock the test moves; no timing): before it, 20 frozen garbage cycles far below the count
    bound were never freed."""
    gcpolicy.withdraw()
    gc.collect()
    gc.freeze()
    now = [0.0]
    hook = gcpolicy.FreezeSurvivors(frozen=gc.get_freeze_count(), max_age_s=300.0, clock=lambda: now[0])
    gc.callbacks.append(hook)
    refs: list[weakref.ref[Node]] = []
    try:
        for _ in range(20):
            conn = [Node() for _ in range(50)]  # 1,000 objects in all: far below the 100,000 floor
            refs.append(weakref.ref(conn[0]))
            gc.collect()  # alive at a full pass: frozen
            del conn
            now[0] += 10.0
        assert hook.thaws == 0 and all(r() is not None for r in refs)  # 200 s: under the age bound
        now[0] += 100.0
        gc.collect()  # the last whole-heap pass is 300 s old: this pass's end unfreezes everything
        gc.collect()  # ... so this one walks the whole heap and frees them
    finally:
        gc.callbacks.remove(hook)
    assert hook.thaws == 1
    assert all(r() is None for r in refs)


def test_a_resident_set_grown_past_its_bound_thaws_before_the_count_or_age_bound(thawed_afterwards: None) -> None:
    """Bytes, bounded: frozen garbage holding large buffers (an oversized body's read() frame: 66
    objects, 2 MB) grows the resident set long before it reaches the count bound.  A full pass that
    finds the process's resident set grown by more than ``rss_floor`` (and ``rss_growth`` x what it
    was at the last whole-heap pass) thaws; the resident set is a function the test sets."""
    gcpolicy.withdraw()
    gc.collect()
    gc.freeze()
    rss = [500 << 20]
    hook = gcpolicy.FreezeSurvivors(frozen=gc.get_freeze_count(), max_age_s=1e9, rss=lambda: rss[0],
                                    rss_floor=64 << 20, rss_growth=0.25)
    gc.callbacks.append(hook)
    refs: list[weakref.ref[Node]] = []
    try:
        for _ in range(10):
            conn = [Node() for _ in range(50)]
            refs.append(weakref.ref(conn[0]))
            gc.collect()  # frozen while alive
            del conn
            rss[0] += 10 << 20  # each cycle's buffer: 10 MiB, 100 MiB in all (under 125 MiB: 25 % of 500)
        assert hook.thaws == 0 and all(r() is not None for r in refs)
        rss[0] += 30 << 20  # 130 MiB more than at the start: past the bound
        gc.collect()  # thaws
        gc.collect()  # the whole-heap pass frees them
        assert hook.thaws == 1 and all(r() is None for r in refs)
        rss[0] += 100 << 20  # grown again, but from the new baseline: under its 25 % (157 MiB)
        gc.collect()
    finally:
        gc.callbacks.remove(hook)
    assert hook.thaws == 1


def test_the_pause_metric_includes_the_survivors_hooks_own_work(thawed_afterwards: None) -> None:
    """The server's pause hook is installed at start, before ``syncref serve`` applies the policy;
    the survivors hook's work at the end of a full pass (``len(gc.get_objects(2))``, the freeze, a
    recount's walk of the frozen list) holds the loop as the pass does, so it must be inside the
    measured pause: the survivors hook runs before the pause hook closes the pause.  Before, the
    pause closed first (the freeze count seen at its stop: 0), and both ``syncref_gc_pause_seconds``
    and ``benchmarks/gc_pauses.py`` left the hook's ~30 % of the pass out."""
    seen: list[int] = []

    def pause_hook(phase: str, info: dict[str, Any]) -> None:  # in the place of GcPauses
        hook = gcpolicy.active()
        if phase == "stop" and info["generation"] == 2 and hook is not None:
            seen.append(hook.freezes)

    gc.callbacks.append(pause_hook)
    try:
        gcpolicy.apply("survivors")
        gc.collect()
    finally:
        gc.callbacks.remove(pause_hook)
    assert seen == [1], seen
