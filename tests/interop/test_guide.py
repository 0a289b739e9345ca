"""docs/clients.md runs: every block marked ``<!-- example: NAME -->`` is extracted and executed
against a fresh ``syncref serve``, in the guide's order, as a reader would run it.

* ``serve.sh`` is the server command: started as written (``--port 3000`` becomes ``--port 0``);
* ``tokens.sh`` is sourced by bash and the variables it exports are the examples' environment
  (``SYNCREF_URL`` then points at the real port);
* ``*.py`` run with this interpreter, ``*.mjs`` with node next to the hand-written bindings in
  tests/interop.  Each must exit 0, print exactly its ``<!-- output: NAME -->`` block and write
  **nothing to stderr** (a normal shutdown of the SDK is quiet);
* the error table equals ``spec.errors.CLIENT_ACTIONS``: every code, the same advice.

A failing example prints its stdout, stderr and the server log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.server import serve_process

from spec.errors import CLIENT_ACTIONS

INTEROP_DIR = Path(__file__).resolve().parent
GUIDE = INTEROP_DIR.parents[1] / "docs" / "clients.md"
BLOCK = re.compile(r"<!-- (example|output): (\S+) -->\n```(\w+)\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    name: str
    lang: str
    code: str


def guide() -> tuple[list[Block], dict[str, str]]:
    text = GUIDE.read_text()
    examples, outputs = [], {}
    for kind, name, lang, code in BLOCK.findall(text):
        if kind == "example":
            examples.append(Block(name, lang, code))
        else:
            outputs[name] = code
    return examples, outputs


def test_the_guide_has_its_examples() -> None:
    examples, outputs = guide()
    names = [b.name for b in examples]
    assert names[:2] == ["serve.sh", "tokens.sh"]
    assert {"quickstart.py", "consumer.py", "rebootstrap.py", "append.py", "errors.py", "app.mjs"} <= set(names)
    assert set(outputs) <= set(names) and set(names) - set(outputs) == {"serve.sh", "tokens.sh"}


def test_the_error_table_is_every_code_with_its_action() -> None:
    text = GUIDE.read_text().split("<!-- error-table -->", 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", text, re.M)
    assert dict(rows) == {code.value: action for code, action in CLIENT_ACTIONS.items()}
    assert [c for c, _ in rows] == [code.value for code in CLIENT_ACTIONS]


def test_every_example_runs(tmp_path: Path, node: str) -> None:
    examples, outputs = guide()
    serve = shlex.split(examples[0].code.strip())
    assert serve[:2] == ["syncref", "serve"] and serve[serve.index("--port") + 1] == "3000"
    data = tmp_path / serve[serve.index("--data") + 1]
    extra = serve[2:]
    for flag in ("--data", "--port"):  # serve_process passes these itself
        i = extra.index(flag)
        del extra[i:i + 2]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SYNCREF_URL", None)
    with serve_process(data.resolve(), *extra) as served:
        tokens = subprocess.run(["bash", "-euc", examples[1].code + '\npython -c "import json, os; '
                                 'print(json.dumps(dict(os.environ)))"'],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert tokens.returncode == 0 and tokens.stderr == "", tokens.stderr
        env = json.loads(tokens.stdout.strip().splitlines()[-1])
        assert env["SYNCREF_URL"] == "http://127.0.0.1:3000"
        env["SYNCREF_URL"] = served.url
        for block in examples[2:]:
            path = (INTEROP_DIR if block.lang == "js" else tmp_path) / f".guide-{os.getpid()}-{block.name}"
            path.write_text(block.code)
            try:
                cmd = [node, str(path)] if block.lang == "js" else [sys.executable, str(path)]
                assert block.lang in ("js", "python"), block
                res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                                     check=False)
            finally:
                if block.lang == "js":
                    path.unlink()
            log = (data.parent / f"{data.name}-server.log").read_text()
            where = f"{block.name}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}\n--- server log\n{log[-3000:]}"
            assert res.returncode == 0, where
            assert res.stderr == "", where
            assert res.stdout == outputs[block.name], where


def test_a_real_failure_is_not_quiet(tmp_path: Path) -> None:
    """The quiet shutdown hides normal closes only: a consumer whose server goes away reports it."""
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    data = tmp_path / "data"
    with serve_process(data) as served:
        from support.server import mint_cli
        token = mint_cli(data, "sync.subscribe,sync.append,sync.checkpoint.write", "chat.*")["token"]
        proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "SYNCREF_URL": served.url, "SYNCREF_TOKEN": token})
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "following"
        served.stop()  # the server goes away under the consumer
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped:" in out
    print(err)
    assert "chat.fail: consumer stopped" in err, err


FAILING = '''
import asyncio, os, sys
import syncref

async def main():
    store = syncref.CheckpointStore("fail.sqlite")
    conn = syncref.Connection(os.environ["SYNCREF_URL"], token=os.environ["SYNCREF_TOKEN"], reconnect=False)
    await conn.connect()
    consumer = syncref.StreamConsumer(conn, store, "chat.fail", client_id="c", apply=lambda tx, e: None,
                                      on_rebootstrap=lambda tx, s: None)
    await consumer.start()
    seq = (await conn.call("append_sync_event", "chat.fail", "k", "1", None, None)).value
    await consumer.wait_for(seq)
    print("following", flush=True)
    try:
        await consumer.wait_for(seq + 1)
    except syncref.SdkError as err:
        print("stopped:", type(err).__name__, flush=True)
    await conn.close()

asyncio.run(main())
'''
