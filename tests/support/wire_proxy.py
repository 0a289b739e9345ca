"""A v2 BSATN WebSocket proxy in front of a server, for the conformance runner's tests.

    PYTHONPATH=tests python -m support.wire_proxy UPSTREAM_URL MODE

prints its own ``http://127.0.0.1:PORT`` on the first line and serves until killed.  ``/v1/ping`` and
refused upgrades (their status and body) are passed through; every accepted connection gets its own
upstream connection.  ``MODE``:

* ``none``: frames pass unchanged;
* ``jitter``: a conformant server on a slow network -- each connection's client frames reach the
  upstream after a lag of its own (0, 0.15 or 0.3 s by connection number, order kept within a
  connection), so two connections' sends may reach the server in the other order than they were sent;
* ``swap_tu``: a server that breaks DELIV order -- of two consecutive ``TransactionUpdate`` on a
  connection, the second is sent first;
* ``stale_code``: a server that answers a stale resume with ``invalid_query`` instead of
  ``stale_cursor`` (same details);
* ``protocol_v2``: a server of another sync protocol version -- its compatibility window names
  ``oa.sync.v2``, and it refuses a token claiming ``oa.sync.v1`` with ``unsupported_protocol_version``
  itself (the rest of the negotiation, in order, is the upstream's).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
import sys
import threading
import time
import urllib.request
from http import HTTPStatus

from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from adapters import wire
from spec import messages as sm

MODES = ("none", "jitter", "swap_tu", "stale_code", "protocol_v2")
SUBPROTOCOL = "v2.bsatn.spacetimedb"
V2_WINDOW = (("protocol_version", "oa.sync.v2"), ("min_schema_version", 3), ("max_schema_version", 3),
             ("min_client_build_id", "20260101T000000Z"), ("max_client_build_id", "20991231T235959Z"))


def _tamper(mode: str, held: list[wire.ServerMessage], msgs: list[wire.ServerMessage]) -> list[wire.ServerMessage]:
    out: list[wire.ServerMessage] = []
    for m in msgs:
        if mode == "swap_tu" and isinstance(m, wire.TransactionUpdate):
            if held:
                out += [m, *held]
                held.clear()
            else:
                held.append(m)
            continue
        if mode == "swap_tu" and held:  # anything else: the held update goes out first, in order
            out += held
            held.clear()
        if mode == "stale_code" and isinstance(m, wire.SubscriptionError):
            mm = wire.server_from_wire(m)
            assert isinstance(mm, sm.SubscriptionError)
            if mm.error.startswith("stale_cursor: "):
                m = wire.to_wire(dataclasses.replace(mm, error="invalid_query: " + mm.error[len("stale_cursor: "):]))
        out.append(m)
    return out


def main(upstream: str, mode: str) -> None:
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    up_http = upstream.rstrip("/")
    up_ws = up_http.replace("http://", "ws://", 1)
    numbers = itertools.count()
    upstreams: dict[int, ClientConnection] = {}

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/v1/ping":
            with urllib.request.urlopen(up_http + "/v1/ping", timeout=10) as resp:
                return Response(resp.status, "OK", Headers(), resp.read())
        auth = [(k, v) for k, v in request.headers.raw_items() if k.lower() == "authorization"]
        if mode == "protocol_v2" and auth:
            payload = auth[0][1].split(" ", 1)[-1].split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            build = str(claims.get("oa_client_build_id", ""))
            if claims.get("oa_protocol_version") == "oa.sync.v1" and re.fullmatch(r"\d{8}T\d{6}Z", build):
                body = {"code": "unsupported_protocol_version", "requested_protocol_version": "oa.sync.v1",
                        "window": dict(V2_WINDOW), "upgrade_required": False}
                return Response(426, "Upgrade Required", Headers([("Content-Type", "application/json")]),
                                json.dumps(body).encode())
        try:
            upstreams[id(conn)] = connect(up_ws + request.path, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                          additional_headers=auth, max_size=None, compression=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body or b""
            if mode == "protocol_v2" and status == 426:
                doc = json.loads(body)
                doc["window"] = dict(V2_WINDOW)
                body = json.dumps(doc).encode()
            return Response(status, HTTPStatus(status).phrase, Headers([("Content-Type", "application/json")]), body)
        return None

    def handler(conn: ServerConnection) -> None:
        up = upstreams.pop(id(conn))
        lag = (next(numbers) % 3) * 0.15 if mode == "jitter" else 0.0

        def client_to_upstream() -> None:
            try:
                for frame in conn:
                    if lag:
                        time.sleep(lag)
                    up.send(frame)
            except Exception:  # either side closed: close the other
                pass
            up.close()

        threading.Thread(target=client_to_upstream, daemon=True).start()
        held: list[wire.ServerMessage] = []
        try:
            for frame in up:
                assert isinstance(frame, bytes)
                for m in _tamper(mode, held, wire.decode_server_frame(frame, 2)):
                    conn.send(wire.frame_server(wire.encode_server(m), wire.Compression.NONE))
        except Exception:  # either side closed: close the other
            pass
        conn.close()

    with serve(handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
               process_request=process_request, compression=None, max_size=None) as srv:
        print(f"http://127.0.0.1:{srv.socket.getsockname()[1]}", flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m support.wire_proxy UPSTREAM_URL MODE")
    main(sys.argv[1], sys.argv[2])
