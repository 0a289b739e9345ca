"""docs/protocol.md's hand-written "Metrics" table against the server's registry.

The table is what operators alert on: every metric the server exposes must have a row, and every
row must name a metric the server exposes, with its type and label name.  Where a label's values
are a closed set fixed by the code (the HTTP routes, the ``where`` of an internal error), the
values the row lists are compared too.  The "Limits" table is pinned by
``tests/adapters/test_isolation_units.py::test_every_limit_is_documented_with_its_default``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.server import ServerConfig, SyncServer

ROOT = Path(__file__).resolve().parents[2]
SERVER_SOURCE = (ROOT / "adapters" / "server.py").read_text(encoding="utf-8")


def metrics_rows() -> dict[str, tuple[str, str]]:
    """metric name -> (type, labels cell) of the "Metrics" table in docs/protocol.md."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Metrics\n"):]
    section = section[:section.index("\n## ", 5)]
    rows = {}
    for m in re.finditer(r"^\| `(syncref_\w+)` \| (\w+) \| (.*?) \| .* \|$", section, re.MULTILINE):
        assert m[1] not in rows, f"{m[1]} has two rows"
        rows[m[1]] = (m[2], m[3])
    return rows


def top_level(cell: str) -> str:
    """The cell without its parenthesized remarks."""
    while re.search(r"\([^()]*\)", cell):
        cell = re.sub(r"\([^()]*\)", "", cell)
    return cell


def label_names(cell: str) -> tuple[str, ...]:
    """The labels a row's labels cell names: none for ``--``; ```name`: values`` names one; else
    every backticked word outside parentheses (``route`` (...), ``status``)."""
    if cell.strip() == "--":
        return ()
    m = re.match(r"`(\w+)`:", cell)
    if m is not None:
        return (m[1],)
    names = tuple(re.findall(r"`(\w+)`", top_level(cell)))
    assert names, f"labels cell {cell!r} names no label"
    return names


def listed_values(cell: str) -> set[str]:
    """The values a labels cell lists: after ```name`:``, the backticked words outside its remarks in
    parentheses; else the backticked words in parentheses (```route` (`ping`, ...)``)."""
    if re.match(r"`(\w+)`:", cell):
        return set(re.findall(r"`(\w+)`", top_level(cell))) - set(label_names(cell))
    return set(re.findall(r"`(\w+)`", cell)) - set(label_names(cell))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> SyncServer:
    return SyncServer(ServerConfig(data_dir=tmp_path_factory.mktemp("data")))  # never started


def exposed(server: SyncServer) -> dict[str, tuple[str, tuple[str, ...]]]:
    """metric name as scraped (counters with ``_total``) -> (type, label names), from the registry."""
    out = {}
    for collector in list(server.metrics.registry._collector_to_names):
        labelnames: Any = getattr(collector, "_labelnames", None)
        for family in collector.collect():
            names = labelnames if labelnames is not None else getattr(family, "_labelnames", ())
            name = family.name + "_total" if family.type == "counter" else family.name
            out[name] = (family.type, tuple(names))
    return out


def test_the_metrics_table_names_every_metric_its_type_and_label(server: SyncServer) -> None:
    rows = metrics_rows()
    code = exposed(server)
    assert set(rows) == set(code), {"documented only": set(rows) - set(code), "exposed only": set(code) - set(rows)}
    wrong = {}
    for name, (kind, labels) in code.items():
        doc_kind, cell = rows[name]
        doc_labels = label_names(cell)
        if (doc_kind, doc_labels) != (kind, labels):
            wrong[name] = {"doc": (doc_kind, doc_labels), "code": (kind, labels)}
    assert wrong == {}


def test_the_http_route_label_lists_every_counted_route(server: SyncServer, monkeypatch: pytest.MonkeyPatch) -> None:
    routes: list[str] = []
    original = server._counted

    def counted(route: str, handler: Any) -> Any:
        routes.append(route)
        return original(route, handler)

    monkeypatch.setattr(server, "_counted", counted)
    server._routes(web.Application())
    assert routes, "no counted route was installed"
    assert listed_values(metrics_rows()["syncref_http_requests_total"][1]) == set(routes)


def test_the_internal_errors_where_label_lists_every_place(server: SyncServer) -> None:
    # the code's places, read from its text (another reading than the table's): a literal label, a
    # supervised task's name, a task that fails outside supervision (the reader)
    places = set(re.findall(r"metrics\.internal\.labels\(\"(\w+)\"\)", SERVER_SOURCE))
    places |= set(re.findall(r"_supervised\(s, \"(\w+)\"", SERVER_SOURCE))
    places |= set(re.findall(r"_task_failed\(s, \"(\w+)\"", SERVER_SOURCE))
    assert {"engine", "reader", "sender"} <= places, places  # the reading found the places at all
    assert listed_values(metrics_rows()["syncref_internal_errors_total"][1]) == places


def test_the_closes_cause_label_lists_every_cause(server: SyncServer) -> None:
    causes = set(re.findall(r"_close\(\s*\w+, [^()]*?(?:\([^()]*\))?[^()]*?,\s*\"(\w+)\"\)", SERVER_SOURCE))
    causes |= set(re.findall(r"metrics\.closes\.labels\(\"(\w+)\"\)", SERVER_SOURCE))
    for block in re.findall(r"code, text, cause = .*?(?=\n\s*(?:elif|else|s\.closers))", SERVER_SOURCE, re.DOTALL):
        causes |= set(re.findall(r", \"(\w+)\"$", block, re.MULTILINE))  # an engine-dropped connection's
    assert {"shutdown", "slow_consumer", "token_expired"} <= causes, causes
    assert listed_values(metrics_rows()["syncref_closes_total"][1]) == causes
