"""``syncref fuzz``: a seeded mutational fuzzer over every decoder where peer input enters.

Targets (each a function of bytes or text, and the exceptions it may raise -- its *specific*
errors; a message is required):

* ``bsatn_args`` -- :func:`adapters.bsatn.decode_args` for every reducer: a value or ``BsatnError``;
* ``bsatn_row`` -- :func:`adapters.bsatn.decode_row` for every table: a row or ``BsatnError``;
* ``client_frame`` -- :func:`adapters.wire.decode_client_frame` (v2 and v3, with the server's
  ``max_queries`` bound and without): messages or ``RemoteProtocolError``;
* ``server_frame`` -- :func:`adapters.wire.decode_server_frame` (tag, gzip, brotli): messages or
  ``RemoteProtocolError``;
* ``sql`` -- :func:`spec.query.parse`: queries or ``SyncError(invalid_query)``;
* ``canonical_json`` -- :func:`spec.canonical.canonicalize`: text (a fixed point: canonicalizing it
  again changes nothing) or ``SyncError(non_canonical_payload)``;
* ``jwt`` -- :meth:`adapters.auth.Authenticator.verify`: claims or ``AuthError``.

Anything else -- another exception, an allowed one without a message, a call that runs past
``HANG_S`` (an interval timer interrupts it) -- is a *crash*, recorded with the input (hex) and
the seed.  Inputs come from a corpus of valid examples per target, mutated by a
``random.Random(seed)``: bit flips, random bytes, interesting integers (length prefixes near 0,
2^31, 2^32), deletions, duplications, truncation, splices of two examples, and for text targets
insertions of syntax tokens (quotes, comments, ``OR``, brackets).  One seed, one input sequence.
The HTTP routes are fuzzed against a running server by ``tests/adapters/test_text_fuzz.py`` and
``tests/adapters/test_server_fuzz.py`` (Hypothesis; slower per input, so not part of this driver).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from adapters import bsatn, wire
from adapters.auth import AuthConfig, Authenticator, AuthError, KeyStore
from spec import query
from spec.canonical import canonicalize
from spec.errors import ErrorCode, RemoteProtocolError, SyncError
from spec.schema import REDUCERS, SCOPES, TABLES

HANG_S = 2.0
INTERESTING = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x01\x00\x00\x00",
               b"\xff", b"\x00", b"\x80", b"\x7f"]
TOKENS = ["'", '"', "--", "/*", "*/", " OR ", " AND ", " = ", "*", "(", ")", ";", ",", "\\", "\x00", "\ud800",
          "SELECT", " FROM ", " WHERE ", "UNION", "1=1", "true", "null", "{", "}", "[", "]", ":", "1e400",
          "-0", "9007199254740993", "\u2028", "é", "..", "%00"]


class Hang(Exception):
    pass


@dataclass
class Target:
    name: str
    corpus: list[bytes]
    call: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    text: bool = False  # inputs are UTF-8 text (decoded with surrogatepass, so lone surrogates occur)
    check: Callable[[BaseException], bool] = lambda exc: bool(str(exc))


@dataclass
class Result:
    target: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: list[dict[str, str]] = field(default_factory=list)
    hangs: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "inputs": self.inputs, "accepted": self.accepted, "refused": self.refused,
                "crashes": len(self.crashes), "hangs": self.hangs, "seconds": round(self.seconds, 1),
                "first_crashes": self.crashes[:5]}


def _sync_code(code: ErrorCode) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, SyncError) and exc.code is code and bool(str(exc))


def _args_corpus() -> list[bytes]:
    samples: dict[str, tuple[object, ...]] = {
        "append_sync_event": ("demo.s", "k1", '{"a":1}', None, 5),
        "ack_checkpoint": ("laptop", "demo.s", 1, 7),
        "upsert_presence": ("sess", "dev", "node", "online", "eu", 30_000),
        "publish_provider_capability": ("p1", '{"x":1}', (5000, 5100), 10, "active"),
        "open_compute_assignment": ("r1", 5000, '{"q":1}'),
        "update_compute_assignment": ("r1", 1, "assigned", "p1", None),
        "enqueue_bridge_event": ("o1", "src", 30078, "[]", "hello"),
        "mark_bridge_event_sent": ("o1", "e" * 64, ("wss://r",)),
        "record_bridge_failure": ("o1", "boom", 1000),
        "publish_stream_signal": ("demo.s", "typing", "{}"),
        "reset_stream_epoch": ("demo.s",),
    }
    out = []
    for name, args in samples.items():
        try:
            out.append(name.encode() + b"\x00" + bsatn.encode_args(name, args))
        except Exception:  # a sample that no longer fits the schema: skip it, the others still fuzz
            continue
    return out


def _decode_args(data: bytes) -> object:
    name, _, body = data.partition(b"\x00")
    reducer = name.decode("ascii", "replace")
    if reducer not in {r.name for r in REDUCERS}:
        reducer = REDUCERS[len(name) % len(REDUCERS)].name
    return bsatn.decode_args(reducer, body)


def _rows_corpus() -> list[bytes]:
    from spec.values import SessionPresence, SyncEvent, SyncStream

    ident = "ab" * 32
    rows: list[Any] = [SyncStream("demo.s", "default", 3, 2, 7, 9, 1, 20_000, 1, 2),
                       SyncEvent("demo.s", 1, 4, "k", "sha256:" + "0" * 64, '{"a":1}', ident, 5, 6),
                       SessionPresence("sess", ident, "dev", "node", "online", "eu", 1, 2, None)]
    out = []
    for row in rows:
        try:
            index = next(i for i, t in enumerate(TABLES) if t.name == bsatn._table_for(row).name)
            out.append(bytes([index]) + bsatn.encode_row(row))
        except Exception:  # a row shape that changed: skip it
            continue
    return out


def _decode_row(data: bytes) -> object:
    table = TABLES[data[0] % len(TABLES)].name if data else TABLES[0].name
    return bsatn.decode_row(table, data[1:])


def _client_corpus() -> list[bytes]:
    msgs: list[wire.ClientMessage] = [
        wire.Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 'demo.f' AND seq > 3",)),
        wire.CallReducer(2, 0, "append_sync_event", bsatn.encode_args(
            "append_sync_event", ("demo.f", "k", '{"a":1}', None, None))),
        wire.Unsubscribe(3, 1, True),
        wire.OneOffQuery(4, "SELECT * FROM sync_stream"),
        wire.Subscribe(5, 2, ("SELECT * FROM sync_stream", "SELECT * FROM *", "")),
    ]
    return [bytes([v]) + wire.encode_client(m) for m in msgs for v in (2, 3)]


def _decode_client(data: bytes) -> object:
    """Both ways the server's peers reach: with a query bound (as the server decodes: a
    ``Subscribe`` of more texts has them stepped over) and without (every text decoded)."""
    version = 3 if data[:1] == b"\x03" else 2
    with contextlib.suppress(RemoteProtocolError):  # (its verdict may differ: a skipped text's UTF-8 is unread)
        wire.decode_client_frame(data[1:], version, max_messages=64, max_queries=1)
    return wire.decode_client_frame(data[1:], version, max_messages=64)


def _server_corpus() -> list[bytes]:
    from spec import messages as sm

    bodies = [wire.encode_server(wire.to_wire(m)) for m in (
        sm.SubscriptionError(7, 1, "invalid_query: {}"),
        sm.UnsubscribeApplied(3, 1, ()),
        sm.ReducerResult(9, 4, sm.ReducerErr("sequence_conflict: {}")),
        sm.ReducerResult(10, 5, sm.ReducerOk(3, ())),
        sm.OneOffQueryResult(11, "invalid_query: x"),
    )]
    out = [b"\x00" + b for b in bodies]
    out += [wire.frame_server(b * 200, c) for b in bodies[:2] for c in (wire.Compression.GZIP, wire.Compression.BROTLI)]
    return out


def _decode_server(data: bytes) -> object:
    return wire.decode_server_frame(data, 2, max_size=1 << 20)


SQL_CORPUS = ["SELECT * FROM sync_event WHERE stream_id = 'demo.s' AND epoch = 1 AND seq > 4",
              "SELECT * FROM sync_stream", "SELECT * FROM *", "SELECT * FROM sync_checkpoint WHERE owner = 0x01",
              "SELECT * FROM session_presence WHERE status = 'online' OR region = 'eu'",
              "SELECT * FROM compute_assignment WHERE version >= 2 AND job_kind != 5000",
              "select * from \"sync_event\" where \"stream_id\" = 'it''s'"]
JSON_CORPUS = ['{"a":1,"b":[true,false,null],"c":{"d":"é"}}', "[]", '"x"', "0", '{"k":"\\ud83d\\ude00"}',
               '[1,[2,[3,[4]]]]', '{"z":1,"a":2}', "9007199254740991"]


def as_text(data: bytes) -> str:
    """Text as the server would hold it: UTF-8 (surrogates allowed, as a JSON ``\\ud800`` escape
    decodes to), or with invalid bytes as lone surrogates (``surrogateescape``, as a non-UTF-8
    command-line argument arrives)."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def targets(data_dir: Path) -> dict[str, Target]:
    auth = Authenticator(AuthConfig(), KeyStore.load_or_create(data_dir))
    tokens = [auth.mint(subject=f"fuzz{i}", scopes=SCOPES[: i + 1], streams=("demo.*",), ttl_s=3600).encode()
              for i in range(3)]

    def verify(data: bytes) -> object:
        return auth.verify(as_text(data))

    def canon(data: bytes) -> object:
        text = canonicalize(as_text(data))
        if canonicalize(text) != text:
            raise AssertionError(f"canonical text is not a fixed point: {text[:100]!r}")
        return text

    def sql(data: bytes) -> object:
        return query.parse(as_text(data))

    ts = [
        Target("bsatn_args", _args_corpus(), _decode_args, (bsatn.BsatnError,)),
        Target("bsatn_row", _rows_corpus() or [bytes([i]) for i in range(len(TABLES))], _decode_row,
               (bsatn.BsatnError,)),
        Target("client_frame", _client_corpus(), _decode_client, (RemoteProtocolError,)),
        Target("server_frame", _server_corpus(), _decode_server, (RemoteProtocolError,)),
        Target("sql", [s.encode() for s in SQL_CORPUS], sql, (SyncError,), text=True,
               check=_sync_code(ErrorCode.INVALID_QUERY)),
        Target("canonical_json", [s.encode() for s in JSON_CORPUS], canon, (SyncError,), text=True,
               check=_sync_code(ErrorCode.NON_CANONICAL_PAYLOAD)),
        Target("jwt", tokens, verify, (AuthError,), text=True),
    ]
    return {t.name: t for t in ts}


def mutate(rng: random.Random, data: bytes, corpus: list[bytes], text: bool) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(9 if text else 8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            b[pos:pos] = rng.choice(INTERESTING)
        elif op == 3 and b:
            end = min(len(b), pos + rng.randrange(1, 16))
            del b[pos:end]
        elif op == 4 and b:
            end = min(len(b), pos + rng.randrange(1, 32))
            b[pos:pos] = b[pos:end] * rng.randrange(1, 4)
        elif op == 5:
            del b[pos:]
        elif op == 6:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            b = b[:pos] + bytearray(other[cut:])
        elif op == 7:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            b[pos:pos] = rng.choice(TOKENS).encode("utf-8", "surrogatepass")
    return bytes(b)


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("no answer within the hang limit")


def judge(t: Target, data: bytes, hang_s: float = HANG_S) -> str | None:
    """Run one input: None when the outcome is allowed (a value or a specific error), else why not.
    Runs on the main thread (the hang limit is an interval timer)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_s)
    try:
        t.call(data)
        return None
    except Hang as exc:
        return f"hang: {exc}"
    except t.allowed as exc:
        return None if t.check(exc) else f"unspecific: {exc!r}"[:300]
    except Exception as exc:
        return repr(exc)[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_target(t: Target, inputs: int, seed: int, hang_s: float = HANG_S) -> Result:
    rng = random.Random(f"{seed}:{t.name}")
    res = Result(t.name)
    started = time.monotonic()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(inputs):
            data = t.corpus[i % len(t.corpus)] if i < len(t.corpus) else mutate(rng, rng.choice(t.corpus), t.corpus,
                                                                                  t.text)
            res.inputs += 1
            signal.setitimer(signal.ITIMER_REAL, hang_s)
            try:
                t.call(data)
                res.accepted += 1
            except Hang as exc:
                res.hangs += 1
                res.crashes.append({"input_hex": data.hex()[:400], "error": repr(exc)})
            except t.allowed as exc:
                if t.check(exc):
                    res.refused += 1
                else:
                    res.crashes.append({"input_hex": data.hex()[:400], "error": f"unspecific: {exc!r}"[:300]})
            except Exception as exc:
                res.crashes.append({"input_hex": data.hex()[:400], "error": repr(exc)[:300]})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    res.seconds = time.monotonic() - started
    return res


def run_fuzz(inputs: int, seed: int, data_dir: Path, only: list[str] | None = None) -> dict[str, Any]:
    ts = targets(data_dir)
    chosen = [ts[n] for n in (only or list(ts))]
    results = [run_target(t, inputs, seed) for t in chosen]
    return {"seed": seed, "inputs_per_target": inputs, "inputs": sum(r.inputs for r in results),
            "crashes": sum(len(r.crashes) for r in results), "hangs": sum(r.hangs for r in results),
            "ok": all(not r.crashes for r in results), "targets": [r.as_json() for r in results]}


def add_parser(sub: Any) -> None:
    f = sub.add_parser("fuzz", help="seeded mutational fuzzing of every decoder where peer input enters")
    f.add_argument("--inputs", type=int, default=20_000, help="inputs per target (default 20000)")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--target", action="append", default=None, help="only this target (repeatable)")
    f.add_argument("--json", default=None, metavar="FILE", help="write the report")


def run(args: Any) -> int:
    import sys
    import tempfile

    names = targets_names()
    bad = [t for t in (args.target or []) if t not in names]
    if bad:
        print(f"syncref fuzz: unknown --target {', '.join(bad)}; targets are {', '.join(names)}", file=sys.stderr)
        return 2
    if args.inputs <= 0:
        print(f"syncref fuzz: --inputs must be positive, got {args.inputs}", file=sys.stderr)
        return 2
    if args.json and not Path(args.json).parent.is_dir():  # found now, not after the run
        print(f"syncref fuzz: --json: no directory {Path(args.json).parent} to write the report in", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="syncref-fuzz-") as d:
        report = run_fuzz(args.inputs, args.seed, Path(d), args.target)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for t in report["targets"]:
        print(f"{t['target']:<15} {t['inputs']:>9} inputs  {t['accepted']:>8} accepted  {t['refused']:>9} refused "
              f"{t['crashes']:>4} crashes  {t['hangs']:>3} hangs  {t['seconds']:>7} s")
        for c in t["first_crashes"]:
            print(f"  CRASH {c['error']}  input {c['input_hex'][:120]}")
    print(f"fuzz: {report['inputs']} inputs, {report['crashes']} crashes, {report['hangs']} hangs (seed {args.seed}): "
          + ("OK" if report["ok"] else "FAILED"))
    return 0 if report["ok"] else 1


def targets_names() -> list[str]:
    return ["bsatn_args", "bsatn_row", "client_frame", "server_frame", "sql", "canonical_json", "jwt"]
