"""``syncref verify --html``: the page is a pure function of the JSON report; parsed back with
html.parser and compared cell by cell with a hand-written report."""

from __future__ import annotations

from html.parser import HTMLParser

from adapters.verify_html import CHECKS, render


class Cells(HTMLParser):
    """Rows of every table as lists of cell texts (list items joined with ' | '), and the classes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.classes: list[str] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            self.classes.append(dict(attrs).get("class") or "")
        elif tag == "li" and self._cell is not None and self._cell:
            self._cell.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


REPORT = {
    "ok": False,
    "machines": {"ModuleMachine": {"ok": True, "seconds": 1.5, "examples": 10},
                 "SystemMachine": {"ok": False, "seconds": 2.0, "error": "boom <b>"}},
    "proofs": {"ok": True, "proofs": [{"id": "p1", "result": "proved", "control": "refuted"},
                                      {"id": "p2", "result": "unknown", "control": "refuted"}]},
    "crosshair": [],
    "mutants": [{"mutant": "m1", "killed": True}, {"mutant": "m2", "killed": False}],
    "engine_mutants": [],
    "invariants": [
        {"id": "X-1", "kind": "state", "statement": "floor <= head + 1 & <script>alert(1)</script>",
         "checks": {"module_machine": "pass", "system_machine": "FAIL", "z3": "pass", "z3_proofs": ["p1"],
                    "crosshair": "-", "conformance": "FAIL", "conformance_scenarios": ["row_filter"],
                    "mutants_caught": ["m1", "m3"], "tests": ["tests/a.py"]}},
        {"id": "Y-2", "kind": "trace", "statement": "in order",
         "checks": {"system_machine": "pass", "engine_vs_model_system": "pass", "z3": "-", "z3_proofs": [],
                    "crosshair": "-", "mutants_caught": [], "tests": []}},
    ],
    "tables": [{"title": "Reach", "columns": ["state", "reached", "verdict"],
                "rows": [["stale", 12, "pass"], {"state": "crash", "reached": 0, "verdict": "FAIL"}]}],
}


def test_the_matrix_cell_by_cell() -> None:
    page = render(REPORT)
    parsed = Cells()
    parsed.feed(page)
    matrix = parsed.tables[0]
    assert matrix[0] == ["invariant", "kind", "statement", *(label for _, label in CHECKS), "Z3 proofs",
                         "scenarios", "mutants caught", "tests naming it"]
    assert matrix[1] == ["X-1", "state", "floor <= head + 1 & <script>alert(1)</script>",
                         "pass", "FAIL", "-", "-", "pass", "-", "FAIL", "p1", "row_filter", "m1 | m3", "tests/a.py"]
    assert matrix[2] == ["Y-2", "trace", "in order", "-", "pass", "-", "pass", "-", "-", "-", "-", "-", "-", "-"]
    assert "script" not in parsed.tags and "<script>" not in page  # escaped, never markup
    assert ' class="FAIL"' in page and ' class="pass"' in page
    assert parsed.tables[1] == [["state", "reached", "verdict"], ["stale", "12", "pass"], ["crash", "0", "FAIL"]]


def test_the_summary_and_verdict() -> None:
    page = render(REPORT)
    assert "syncref verify: <span class=\"bad\">FAILED</span>" in page
    assert "SystemMachine: <span class=\"bad\">FAIL</span>" in page and "boom &lt;b&gt;" in page
    assert "Z3: 1/2 proofs proved" in page and "model mutants: <span class=\"bad\">1/2 killed" in page
    assert "CrossHair: skipped" in page and "engine mutants: no recorded run" in page
    ok = render({**REPORT, "ok": True, "proofs": {"skipped": True}})
    assert "syncref verify: <span class=\"ok\">OK</span>" in ok and "Z3: skipped" in ok
    assert "http" not in ok.replace("http-equiv", "")  # self-contained: nothing fetched


def test_the_conformance_summary() -> None:
    assert "<li>conformance: skipped</li>" in render(REPORT)
    outcomes = [{"area": "delivery", "scenario": "row_filter", "invariants": ["X-1"], "status": "fail",
                 "message": "leak"},
                {"area": "protocol", "scenario": "handshake", "invariants": [], "status": "pass", "message": ""},
                {"area": "replay", "scenario": "replay_parity_across_restart", "invariants": ["Y-2"],
                 "status": "skip", "message": "needs --restart-cmd CMD"}]
    page = render({**REPORT, "conformance": outcomes})
    assert '<span class="bad">1 scenarios passed, 1 failed</span>, 1 skipped' in page
