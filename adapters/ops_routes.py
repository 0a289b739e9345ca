"""The operator's page over HTTP: thin routes around :mod:`adapters.ops`.

``GET /ops/data`` (the page's JSON feed) needs an admin token: ``Authorization: Bearer`` or
``?token=``; 401 without one or with one that does not verify, 403 for a token without
``sync.admin`` -- never any data.  ``GET /`` (the page, which holds no data) checks a token when one
is given (``/?token=`` as an operator opens it: the same 401/403) and is the bare page without one
(a reload after the script moved the token from the address bar into ``sessionStorage``).
``/ops/data?wait=OFFSET`` is a long poll: it answers once the committed offset differs from OFFSET,
or after ``WAIT_S``.  ``GET /ops/app.js`` and ``/ops/style.css`` are the page's own code and style
(no data, no token needed, no CDN).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from adapters import ops
from adapters.auth import Authenticator, AuthError
from reference.engine import Engine
from spec.auth import Claims

WAIT_S = 1.0  # the longest a /ops/data?wait= request is held
WAIT_STEP_S = 0.05
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
# the page loads nothing from anywhere else: no CDN, no inline script
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class OpsSource:
    engine: Callable[[], Engine]
    auth: Callable[[], Authenticator]
    facts: Callable[[], ops.ServerFacts]


def _asset(name: str) -> bytes:
    return resources.files("adapters").joinpath("ops_page", name).read_bytes()


def install(app: web.Application, source: OpsSource, counted: Callable[[str, Handler], Handler]) -> None:
    page = _asset("index.html")
    assets = {name: _asset(name) for name in ASSETS}

    def text(status: int, message: str) -> web.Response:
        return web.Response(status=status, text=message, headers=NO_STORE)

    def viewer(request: web.Request) -> Claims | web.Response:
        auth = source.auth()
        try:
            token = auth.token_from_request(request.headers.get("Authorization"), request.query.get("token"))
            if token is None:
                return text(401, "Authorization required: the operator's page needs an admin token "
                                 "(open /?token=TOKEN, or send Authorization: Bearer TOKEN)")
            claims = auth.verify(token).claims
        except AuthError as err:
            return text(err.status, str(err))
        denied = ops.access(claims)
        return text(denied.status, denied.message) if denied is not None else claims

    async def index(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") is not None or "token" in request.query:
            who = viewer(request)  # a token given is checked: a bad one gets its refusal, not the page
            if isinstance(who, web.Response):
                return who
        # no token at all: the shell (no data, like /ops/app.js) -- a reload after the script took the
        # token out of the address bar; the script reads it from sessionStorage or says how to give one
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={**NO_STORE, "Content-Security-Policy": CSP})

    async def data(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        if isinstance(who, web.Response):
            return who
        wait = request.query.get("wait")
        if wait is not None:  # long poll: answer as soon as something commits, or after WAIT_S
            if not (wait.isascii() and wait.isdigit()) or len(wait) > 20:  # isdigit alone takes "²" and "٣"
                return text(400, f"wait must be a committed offset (a non-negative integer), got {wait[:40]!r}")
            deadline = time.monotonic() + WAIT_S
            while source.engine().committed == int(wait) and time.monotonic() < deadline:
                await asyncio.sleep(WAIT_STEP_S)
        body = json.dumps(ops.gather(source.engine(), source.facts(), who), separators=(",", ":"))
        return web.Response(text=body, content_type="application/json", headers=NO_STORE)

    def asset(name: str) -> Handler:
        async def serve(_request: web.Request) -> web.StreamResponse:
            return web.Response(body=assets[name], content_type=ASSETS[name],
                                headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
        return serve

    app.router.add_get("/", counted("ops_page", index))
    app.router.add_get("/ops/data", counted("ops_data", data))
    for name in ASSETS:
        app.router.add_get(f"/ops/{name}", counted("ops_asset", asset(name)))
