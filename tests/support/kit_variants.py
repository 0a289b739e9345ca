"""Planted non-conformances in the server layer (``adapters/server.py``; one in the engine's slow-consumer
bound, which no engine mutant of the differential machines breaks whole), for the conformance kit's
tests (``tests/adapters/test_conformance_runner.py``): each breaks a promise of docs/protocol.md that
only the wire shows -- framing, compression, HTTP routes, pacing -- and must fail the wire scenario
named beside it.  Engine bugs are :data:`support.engine_mutants.ENGINE_MUTANTS`.

Applied as source edits by :func:`support.mutants.apply` (each edit's text must occur exactly once in
``adapters/server.py``, so a change there stops the plant loudly instead of planting nothing), in the
server process itself, by ``python -m support.serve_with_bug NAME[+NAME...]``.
"""

from __future__ import annotations

from support.mutants import Mutant

SERVER = "adapters.server"

KIT_VARIANTS: tuple[Mutant, ...] = (
    Mutant("slow_subscribe", SERVER,
           (("        engine.handle(s.conn_id, abstract)\n",
             "        if isinstance(msg, wire.Subscribe):  # planted: a Subscribe takes 0.8 s to handle\n"
             "            time.sleep(0.8)\n"
             "        engine.handle(s.conn_id, abstract)\n"),),
           "a Subscribe takes 0.8 s to handle (a large snapshot, a slow machine): with snapshot_ungated, a "
           "confirmed reader's early SubscribeApplied arrives after a 0.5 s listening window that starts when "
           "the Subscribe is sent, not once it has been handled"),
    Mutant("v2_preferred", SERVER,
           (("    return next((p for p in SUBPROTOCOLS if p in offered), None)\n",
             "    return next((p for p in reversed(SUBPROTOCOLS) if p in offered), None)\n"),),
           "offered v2 and v3, the server picks v2 (protocol.md \"Upgrade\": its preference is v3)"),
    Mutant("v3_frames_read_as_v2", SERVER,
           (("                    if s.version == 2 and len(s.inbound) < limit:",
             "                    if len(s.inbound) < limit:"),),
           "a v3 client frame is decoded as one v2 message: a frame of several messages closes 1011"),
    Mutant("v3_never_coalesces", SERVER,
           (("        v3 = s.version == 3\n", "        v3 = False\n"),),
           "a v3 connection gets v2 framing, one message per frame, never coalesced"),
    Mutant("ignores_compression", SERVER,
           (("            compression = wire.Compression.parse(request.query.get(\"compression\"))\n",
             "            compression = wire.Compression.parse(request.query.get(\"compression\"))\n"
             "            compression = wire.Compression.NONE\n"),),
           "the compression parameter is checked and then ignored: every frame goes uncompressed, tag 0"),
    Mutant("sql_reads_every_stream", SERVER,
           (("                reads.append((self.engine.read(verified.claims, stmt, scan), started))",
             "                reads.append((self.engine.read(__import__('dataclasses').replace(verified.claims, "
             "streams=('*',)), stmt, scan), started))"),),
           "/sql reads as if the caller were granted every stream: rows of ungranted streams (AUTH-1)"),
    Mutant("call_without_return_value", SERVER,
           (("        if ret is not None:\n            headers[\"syncref-return-value\"]",
             "        if False:\n            headers[\"syncref-return-value\"]"),),
           "an HTTP call's 200 leaves out the syncref-return-value header (an append's seq)"),
    Mutant("call_answers_before_durable", SERVER,
           (("            self._pump()\n            await self._wait_durable(offset)\n"
             "        except DurabilityFailed as exc:\n"
             "            return _text(503, f\"the commit log could not be written, so the call",
             "            self._pump()\n        except DurabilityFailed as exc:\n"
             "            return _text(503, f\"the commit log could not be written, so the call"),),
           "an HTTP call answers 200 once committed, before its offset is durable (CONF-1)"),
    Mutant("sql_confirmed_ignored", SERVER,
           (("        if confirmed:\n            try:\n                await self._wait_durable(offset)",
             "        if False:\n            try:\n                await self._wait_durable(offset)"),),
           "/sql answers at once whatever confirmed says: a state not yet durable (CONF-1)"),
    Mutant("never_closes_slow_consumer", "reference.engine",
           (("            self.close(conn.conn_id, SLOW_CONSUMER_REASON)\n\n    # --- delivery",
             "            pass\n\n    # --- delivery"),
            ("conn.outbound_bytes > max_bytes):\n"
             "                        self.close(conn.conn_id, SLOW_CONSUMER_REASON)",
             "conn.outbound_bytes > max_bytes):\n                        pass"),
            ("            self.close(conn.conn_id, SLOW_CONSUMER_REASON)\n\n    def _fits",
             "            pass\n\n    def _fits")),
           "a connection past max_outbound_queue is never closed: its queue grows without bound (SLOW-1)"),
    Mutant("tx_offset_is_seq", "reference.reducers",
           (("c.identity, x.now, x.offset))", "c.identity, x.now, next_seq))"),),
           "an event's tx_offset is its seq (a per-stream count), not the offset of the transaction that wrote it"),
    Mutant("tx_offset_of_the_first_append", "reference.reducers",
           (("c.identity, x.now, x.offset))", "c.identity, x.now, x.offset - next_seq + 1))"),),
           "an event's tx_offset is moved back by its seq - 1: every event of a stream appended in a row carries "
           "the offset of the stream's first"),
    Mutant("confirmed_gate_gives_up", "reference.engine",
           (("    def advance_durable(self, offset: int) -> None:\n        self.durable = max(self.durable, offset)\n",
             "    def advance_durable(self, offset: int) -> None:\n        self.durable = max(self.durable, offset)\n"
             "        self._durable_at = __import__('time').monotonic()\n"),
            ("        return self.durable if conn.confirmed else None\n",
             "        if conn.confirmed and __import__('time').monotonic() - getattr(self, '_durable_at', 0.0) > 0.8:\n"
             "            return self.committed\n"
             "        return self.durable if conn.confirmed else None\n")),
           "the confirmed-read gate gives up once durability has not moved for 0.8 s: a stalled log's transactions "
           "are released, undurable, at the next delivery pass after that (with sweep_ticks_fast: within 50 ms)"),
    Mutant("sweep_ticks_fast", SERVER,
           (("    sweep_interval_s: float = 1.0", "    sweep_interval_s: float = 0.05"),),
           "not a bug: the presence sweep, and the delivery pass after it, every 50 ms instead of every second, so "
           "a planted time-based release goes out on time"),
    Mutant("v2_brotli_sent_as_gzip", SERVER,
           (("        self.version = version\n        self.compression = compression\n",
             "        self.version = version\n        self.compression = (wire.Compression.GZIP if version == 2 and "
             "compression is wire.Compression.BROTLI else compression)\n"),),
           "a v2 connection that asked for Brotli gets gzip frames (tag 2): one codec of one protocol mislabelled"),
    Mutant("unknown_reducer_is_400", SERVER,
           (("            return _text(404, SyncError(ErrorCode.NO_SUCH_REDUCER,",
             "            return _text(400, SyncError(ErrorCode.NO_SUCH_REDUCER,"),),
           "an HTTP call of a reducer the module does not define is 400, not 404 no_such_reducer"),
    Mutant("reducer_looked_up_before_content_type", SERVER,
           (("        if \"Content-Type\" not in request.headers:\n"
             "            return _text(400, \"Header of type `content-type` was missing\")\n",
             "        if request.match_info[\"reducer\"] not in REDUCER_BY_NAME:\n"
             "            return _text(404, SyncError(ErrorCode.NO_SUCH_REDUCER, "
             "{\"reducer\": request.match_info[\"reducer\"]}).render())\n"
             "        if \"Content-Type\" not in request.headers:\n"
             "            return _text(400, \"Header of type `content-type` was missing\")\n"),),
           "an HTTP call looks the reducer up before it checks the Content-Type (protocol.md \"HTTP call\", 4 then 5)"),
    Mutant("sql_text_over_limit_is_400", SERVER,
           (("            return _text(413, f\"SQL text over {lim.max_sql_bytes} bytes\")",
             "            return _text(400, f\"SQL text over {lim.max_sql_bytes} bytes\")"),),
           "/sql text over max_sql_bytes is 400, not 413"),
    Mutant("missing_token_is_403", SERVER,
           (("                return _text(401, \"Authorization required: send a Bearer token",
             "                return _text(403, \"Authorization required: send a Bearer token"),),
           "an HTTP request without a token is 403, not 401 Authorization required"),
    Mutant("compact_forbidden_is_401", SERVER,
           (("            return _text(403, f\"compaction needs a token",
             "            return _text(401, f\"compaction needs a token"),),
           "a compaction asked with a token that is not an admin's granted '*' is 401, not 403"),
    Mutant("confirmed_gate_releases_after_1s", "reference.engine",
           (("        return self.durable if conn.confirmed else None\n",
             "        if conn.confirmed and conn.outbound and conn.outbound[0].offset > self.durable:\n"
             "            since = self.__dict__.setdefault('_held_since', {}).setdefault(\n"
             "                (conn.conn_id, conn.outbound[0].offset), __import__('time').monotonic())\n"
             "            if __import__('time').monotonic() - since >= 1.0:\n"
             "                return self.committed\n"
             "        return self.durable if conn.confirmed else None\n"),),
           "a confirmed reader's held message is released, undurable, once it has been held 1 s (twice the kit's "
           "default --quiet), at the next delivery pass after that (with sweep_ticks_fast: within 50 ms)"),
    # session kit2: rows and scenarios the kitq session's kit did not drive (each passed it)
    Mutant("sql_skips_compat", SERVER,
           (("        verified = self._http_caller(request)\n        if isinstance(verified, web.Response):\n"
             "            return verified\n        lim = self.config.limits\n",
             "        admit, self._admit = self._admit, lambda _v: None  # planted: /sql skips the window\n"
             "        try:\n            verified = self._http_caller(request)\n"
             "        finally:\n            del self._admit\n"
             "        if isinstance(verified, web.Response):\n"
             "            return verified\n        lim = self.config.limits\n"),),
           "/sql does not check the compatibility window: a token outside it reads (protocol.md \"HTTP SQL\": 426)"),
    Mutant("body_timeout_is_400", SERVER,
           (("            return _text(408, f\"the request body did not arrive",
             "            return _text(400, f\"the request body did not arrive"),),
           "a call or /sql body that does not arrive within body_timeout_s is 400, not 408"),
    Mutant("identity_limit_off_by_one", SERVER,
           (("        if mine >= lim.max_connections_per_identity:",
             "        if mine > lim.max_connections_per_identity:"),),
           "an identity may open max_connections_per_identity + 1 WebSocket connections before the 429"),
    Mutant("sql_limit_off_by_one", SERVER,
           (("        if len(text.encode(\"utf-8\")) > lim.max_sql_bytes:",
             "        if len(text.encode(\"utf-8\")) >= lim.max_sql_bytes:"),),
           "/sql text of exactly max_sql_bytes is refused 413 (the limit is inclusive)"),
    Mutant("call_gives_up_waiting_after_1s", SERVER,
           (("            self._pump()\n            await self._wait_durable(offset)\n"
             "        except DurabilityFailed as exc:\n"
             "            return _text(503, f\"the commit log could not be written, so the call",
             "            self._pump()\n            with contextlib.suppress(TimeoutError):  # planted\n"
             "                await asyncio.wait_for(asyncio.shield(self._wait_durable(offset)), 1.0)\n"
             "        except DurabilityFailed as exc:\n"
             "            return _text(503, f\"the commit log could not be written, so the call"),),
           "an HTTP call waits for durability 1 s at most (twice the kit's default --quiet), then answers 200 "
           "undurable (CONF-1)"),
    Mutant("websocket_token_missing_is_403", SERVER,
           (("                return _text(401, \"Authorization required\")\n",
             "                return _text(403, \"Authorization required\")\n"),),
           "POST /v1/identity/websocket-token without a token is 403, not 401"),
    Mutant("schema_any_version_is_v9", SERVER,
           (("        if version == \"9\":", "        if version is not None:"),),
           "GET /schema?version=10 answers RawModuleDefV9 instead of 400 (spacetime call then never asks for 9)"),
    Mutant("sql_statements_off_by_one", SERVER,
           (("        if len(statements) > lim.max_sql_statements:",
             "        if len(statements) >= lim.max_sql_statements:"),),
           "/sql of exactly max_sql_statements statements is refused limit_exceeded (the limit is inclusive)"),
)
