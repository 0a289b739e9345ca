"""Counterexamples as text: evaluate states, actions and records in a Z3 model, compactly.

Rows that are unused and option values that are absent are left out, so a counterexample reads
like the state it describes: ``stream0: epoch=1 head=3 floor=1 | events: [1 k=7 h=H(2) e=1 ...]``.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import z3

from proofs.core import Record, ZExpr, field_names


def value(m: Any, e: ZExpr) -> str:
    if isinstance(e, bool | int):
        return str(e)
    v = m.eval(e, model_completion=True)
    return str(v)


def _truthy(m: Any, e: ZExpr) -> bool:
    if isinstance(e, bool):
        return e
    return bool(z3.is_true(m.eval(e, model_completion=True)))


def record(m: Any, rec: Record, skip_flag: str = "used") -> str:
    guards = type(rec).GUARDS
    out = []
    for name in field_names(rec):
        if name == skip_flag:
            continue
        g = guards.get(name)
        if g is not None and not _truthy(m, getattr(rec, g)):
            continue
        if name in guards.values():
            continue
        out.append(f"{name}={value(m, getattr(rec, name))}")
    return " ".join(out)


def rows(m: Any, label: str, items: tuple[Record, ...], flag: str = "used") -> list[tuple[int, str]]:
    lines = []
    for i, row in enumerate(items):
        if flag in field_names(row) and not _truthy(m, getattr(row, flag)):
            continue
        lines.append((i, f"  {label}[{i}]: {record(m, row, flag)}"))
    return lines


def render(m: Any, label: str, obj: object, base: object = None) -> str:
    """Render any state, action or record of the encodings.  ``base``: a state of the same kind;
    only what differs from it is shown (for post-states)."""
    from proofs.encoding import Db, Delta, Events, db_parts

    if isinstance(obj, Db):
        same = {name for name, eq in db_parts(obj, base).items() if _truthy(m, eq)} if isinstance(base, Db) else set()
        head = f"{label}: epoch_floor={value(m, obj.epoch_floor)} evt_rows={value(m, obj.evt_rows)}"
        lines = [head + ("  (rows not shown are as in pre)" if same else "")]
        for j, (st, ev) in enumerate(zip(obj.streams, obj.events, strict=True)):
            if not _truthy(m, st.exists) and value(m, ev.n) == "0":
                continue
            if {f"stream{j}", f"events{j}"} <= same:
                continue
            lines.append(f"  stream[{j}]: {'' if _truthy(m, st.exists) else '(absent) '}{record(m, st, 'exists')}")
            lines.append(f"    events: {events(m, ev)}")
        for name, label_, items in (("ckpt", "checkpoint", obj.ckpts), ("presence", "presence", obj.presence),
                                    ("provider", "provider", obj.providers),
                                    ("assignment", "assignment", obj.assignments), ("outbox", "outbox", obj.outbox)):
            lines += [line for k, line in rows(m, label_, items) if f"{name}{k}" not in same]
        return "\n".join(lines)
    if isinstance(obj, Delta):
        parts = []
        if _truthy(m, obj.ins):
            e = obj.ins_ev
            parts.append(f"inserted event in stream[{value(m, obj.ins_stream)}]: seq={value(m, e.seq)} "
                         f"key={value(m, e.key)} hash={value(m, e.hash)} epoch={value(m, e.epoch)}")
        parts += [f"deleted {value(m, n)} events of stream[{j}]" for j, n in enumerate(obj.dels) if value(m, n) != "0"]
        parts += [f"{value(m, n)} presence_signal for session[{k}] (status {value(m, obj.psig_status[k])})"
                  for k, n in enumerate(obj.psig) if value(m, n) != "0"]
        if value(m, obj.ssig) != "0":
            parts.append(f"{value(m, obj.ssig)} stream_signal")
        return f"{label}: " + ("; ".join(parts) if parts else "nothing")
    if isinstance(obj, Events):
        return f"{label}: {events(m, obj)}"
    if isinstance(obj, Record):
        return f"{label}: {record(m, obj, skip_flag='')}"
    if is_dataclass(obj):
        parts = []
        for f in fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, tuple):
                parts.append(f"{f.name}=[{', '.join(_short(m, x) for x in v)}]")
            else:
                parts.append(f"{f.name}={_short(m, v)}")
        return f"{label}: {' '.join(parts)}"
    return f"{label} = {value(m, obj)}"


def _short(m: Any, v: object) -> str:
    if isinstance(v, Record):
        return "(" + record(m, v, skip_flag="") + ")"
    if is_dataclass(v):
        return render(m, "", v).lstrip(": ")
    return value(m, v)


def events(m: Any, ev: Any) -> str:
    n = m.eval(ev.n, model_completion=True)
    count = n.as_long() if z3.is_int_value(n) else 0
    items = []
    for i in range(min(max(count, 0), len(ev.slots))):
        e = ev.slots[i]
        items.append(f"seq={value(m, e.seq)} key={value(m, e.key)} hash={value(m, e.hash)} "
                     f"payload={value(m, e.payload)} epoch={value(m, e.epoch)} at={value(m, e.at)}")
    return f"n={count} [" + "; ".join(items) + "]"
