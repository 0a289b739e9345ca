"""The hand-written tables of docs/protocol.md ("Metrics") and docs/operations.md (the flags of
``serve`` and ``token mint``, the config file's tables, keys and defaults) against the code.

The table is what operators alert on: every metric the server exposes must have a row, and every
row must name a metric the server exposes, with its type and label name.  Where a label's values
are a closed set fixed by the code (the HTTP routes, the ``where`` of an internal error), the
values the row lists are compared too.  The "Limits" table is pinned by
``tests/adapters/test_isolation_units.py::test_every_limit_is_documented_with_its_default``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters import commands
from adapters.server import Limits, ServerConfig, SyncServer
from spec import contracts as spec_contracts
from spec.compat import CompatWindow

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


# --- docs/operations.md: the serve and token mint flags, the config file's tables ------------------

OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def table_after(heading: str, first_column: str) -> list[list[str]]:
    """The rows of the first table after ``heading`` whose header starts ``| first_column |``."""
    text = OPERATIONS[OPERATIONS.index(heading):]
    text = text[text.index(f"| {first_column} |"):]
    rows = []
    for line in text.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def documented_flags(heading: str) -> dict[str, str]:
    """flag -> default cell of a flag table (a cell may name several flags)."""
    out = {}
    for flag_cell, default, _meaning in table_after(heading, "flag"):
        for flag in re.findall(r"`(--[a-z-]+)", flag_cell):
            out[flag] = default
    return out


def parser_options(*path: str) -> dict[str, argparse.Action]:
    """``syncref <path...>``'s options by their flag, as the CLI builds them."""
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers(dest="command"))
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {opt: a for a in parser._actions for opt in a.option_strings if opt not in ("-h", "--help")}


def serve_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str | None = None) -> Any:
    """What ``syncref serve`` with no flag (and ``text`` as its config file) would run with."""
    monkeypatch.setattr(spec_contracts, "hot_enabled", lambda: False)  # the test run may check contracts
    args = parser_options("serve")  # the parser's own defaults, every flag absent
    ns = argparse.Namespace(**{a.dest: a.default for a in args.values()})
    path = None
    if text is not None:
        path = tmp_path / "syncref.toml"
        path.write_text(text)
    return commands.load_config(path, ns)


def test_the_serve_flag_table_lists_every_flag_with_its_default(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    documented = documented_flags("## Running the server")
    options = parser_options("serve")
    assert set(documented) == set(options), {"documented only": set(documented) - set(options),
                                             "parser only": set(options) - set(documented)}
    config = serve_config(monkeypatch, tmp_path)
    effective = {"--data": options["--data"].default, "--host": config.host, "--port": config.port,
                 "--database": config.database, "--loop": config.event_loop, "--config": None}
    wrong = {}
    for flag, cell in documented.items():
        if options[flag].const is True:  # store_true
            want = "off"
            if options[flag].default is not False:
                wrong[flag] = ("store_true with default", options[flag].default)
        else:
            want = "none" if effective[flag] is None else f"`{effective[flag]}`"
        if cell != want:
            wrong[flag] = (cell, want)
    assert wrong == {}


def test_the_token_mint_flag_table_lists_every_flag_with_its_default() -> None:
    documented = documented_flags("### Tokens")
    options = parser_options("token", "mint")
    assert set(documented) == set(options), {"documented only": set(documented) - set(options),
                                             "parser only": set(options) - set(documented)}
    wrong = {}
    for flag, cell in documented.items():
        default = options[flag].default
        if options[flag].const is True:
            want = {"off"}
        elif default in (None, ""):
            want = {"none", "a random UUID"} if flag == "--subject" else {"none"}
        else:
            want = {f"`{default}`"}
        if cell not in want:
            wrong[flag] = (cell, want)
    assert wrong == {}


def documented_config() -> dict[tuple[str, str], Any]:
    """(table, key) -> the documented default of the config table (None for 'none' or no default)."""
    out: dict[tuple[str, str], Any] = {}
    table = ""
    for table_cell, key_cell, type_cell, _meaning in table_after("### The config file", "table"):
        table = table_cell.strip("`[]") or table
        keys = re.findall(r"`(\w+)`", key_cell)
        if key_cell.startswith("every field of"):
            out[(table, "*")] = None
            continue
        values = re.findall(r"`([^`]+)`", re.sub(r"\([^()]*\)", "", type_cell))
        if len(values) != len(keys):  # one key, its choices listed before its default
            values = values[-1:] if values and len(keys) == 1 else [None] * len(keys)
        for key, value in zip(keys, values, strict=True):
            out[(table, key)] = value
    return out


def allowed_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table: str | None) -> set[str]:
    """The keys (or tables) the config loader accepts, from its own refusal of an unknown one."""
    text = "nonsense_key = 1\n" if table is None else f"[{table}]\nnonsense_key = 1\n"
    with pytest.raises(commands.ConfigError) as info:
        serve_config(monkeypatch, tmp_path, text)
    return set(str(info.value).split("allowed: ", 1)[1].split(", "))


def test_the_config_table_lists_every_table_and_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    documented = documented_config()
    tables = {t for t, _k in documented}
    assert tables == allowed_keys(monkeypatch, tmp_path, None)
    for table in sorted(tables - {"limits"}):
        keys = {k for t, k in documented if t == table}
        assert keys == allowed_keys(monkeypatch, tmp_path, table), table
    assert documented[("limits", "*")] is None  # "every field of Limits": accepted as such
    assert allowed_keys(monkeypatch, tmp_path, "limits") == {f.name for f in dataclasses.fields(Limits)}


def test_the_config_table_states_each_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = serve_config(monkeypatch, tmp_path)
    code: dict[tuple[str, str], Any] = {("faults", "stall_commits_while"): config.stall_commits_while}
    for key in ("host", "port", "database", "sweep_interval_s", "compact_interval_s", "commit_gather_s",
                "event_loop", "snapshot_every", "snapshot_keep", "contracts", "gc_freeze"):
        code[("server", key)] = getattr(config, key)
    for f in dataclasses.fields(CompatWindow):
        code[("compat", f.name)] = getattr(config.window, f.name)
    auth = config.auth
    code.update({("auth", "issuer"): auth.issuer, ("auth", "audience"): auth.audience,
                 ("auth", "external_issuer"): auth.external_issuer,
                 ("auth", "external_hs256_secret_file"): auth.external_hs256_secret,
                 ("auth", "external_public_key_file"): auth.external_public_key_pem,
                 ("auth", "allow_anonymous"): auth.allow_anonymous,
                 ("auth", "default_scopes"): sorted(auth.default_scopes),
                 ("auth", "default_streams"): list(auth.default_stream_grants),
                 ("auth", "identity_ttl_s"): auth.identity_ttl_s})
    documented = documented_config()
    assert set(code) == set(documented) - {("limits", "*")}
    wrong = {}
    for where, value in code.items():
        cell = documented[where]
        if value is None:
            ok = cell is None
        elif isinstance(value, bool | int | float | list):
            ok = cell is not None and json.loads(cell) == value and type(json.loads(cell)) is type(value)
        else:
            ok = cell == value
        if not ok:
            wrong[where] = (cell, value)
    assert wrong == {}


# --- README.md's quickstart: what the two commands run -----------------------------------------------


def test_the_quickstart_says_what_its_two_commands_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``./run serve``'s comment states the address and data directory a flagless serve uses;
    ``./run test``'s the steps the run script's ``test`` case runs, which CI runs through ``.ci/run``
    (``tests/adapters/test_cli_serve.py::test_readme_quickstart_serve_command_exists`` pins the
    commands themselves)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    comments = {}
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        if comment:
            comments[command.strip()] = comment.strip()
    config = serve_config(monkeypatch, tmp_path)
    data = parser_options("serve")["--data"].default
    assert comments["./run serve"].startswith(
        f"the reference server on http://{config.host}:{config.port}, SQLite log in ./{data}"), comments
    script = (ROOT / "run").read_text(encoding="utf-8")
    test_case = script.split("\n  test)\n", 1)[1].split("\n    ;;\n", 1)[0]
    steps = re.findall(r'echo "== ([^"]+)"', test_case)
    assert steps[-4:] == ["ruff", "mypy --strict", "import layering", "pytest"], steps
    assert comments["./run test"].startswith("the full CI suite: ruff, mypy --strict, import layering, pytest")
    assert "npm ci --prefix tests/interop" in test_case  # "(incl. the npm SDK interop)"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().splitlines()
    assert ci[-1] == "exec ./run test"


def test_the_counters_without_a_created_sample_are_the_ones_the_table_names(server: SyncServer) -> None:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    head = text[text.index("\n## Metrics\n"):].split("| metric |", 1)[0]
    named = set(re.findall(r"`(syncref_\w+_total)`", head.split("not the ones", 1)[1]))
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    for collector in list(server.metrics.registry._collector_to_names):  # every labelled series made once
        names = getattr(collector, "_labelnames", ())
        if names and hasattr(collector, "labels"):
            collector.labels(*("x" for _ in names))
    scraped = text_string_to_metric_families(generate_latest(server.metrics.registry).decode())
    created = set()
    counters = set()
    for family in scraped:  # (the text format writes NAME_created as a gauge family of its own)
        if family.type == "counter":
            counters.add(family.name + "_total")
        elif family.name.endswith("_created"):
            created.add(family.name.removesuffix("_created") + "_total")
    assert created <= counters and named <= counters, (created - counters, named - counters)
    assert counters - created == named
