"""`gadugi dashboard`: a Starlette app on 127.0.0.1, behind a random token.

Every request must carry the token: in the query (the URL the command prints), in the
cookie set from it, or in the ``X-Gadugi-Token`` header the page's script sends. The Host
header must name this server (a DNS-rebinding page cannot reach it under another name).
An action (POST) needs the header itself, which no cross-site form can set, and is refused
when ``Origin`` or ``Sec-Fetch-Site`` says it came from another site.

Live updates: one thread polls the registry's ``PRAGMA data_version`` (it changes when
another connection commits) every ``POLL_S`` and counts changes; each open event stream
sends ``change`` when the count moves, and the page fetches its content again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import GadugiError, NotFoundError
from ..procs import same_process
from ..registry import Registry
from . import actions, model, render

POLL_S = 0.3
KEEPALIVE_S = 15.0
SHUTDOWN_GRACE_S = 1  # open event streams are cut after this at shutdown
COOKIE = "gadugi_token"
ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
CSP = "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:"
log = logging.getLogger(__name__)


def alive(orch: dict[str, Any]) -> bool:
    return same_process(orch["pid"] or 0, orch["pid_start_time"])


class Watcher:
    """Counts the registry's changes, from a thread of its own (its own connection)."""

    def __init__(self, state_db: Path) -> None:
        self.state_db = state_db
        self.version = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gadugi-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        registry: Registry | None = None
        seen: int | None = None
        try:
            while not self.stop.wait(POLL_S):
                if registry is None:
                    try:
                        registry = Registry(self.state_db, readonly=True)
                    except GadugiError:
                        continue  # no orchestration yet, or locked for a moment
                    self.version += 1
                try:
                    now = registry.conn.execute("PRAGMA data_version").fetchone()[0]
                except Exception:  # a registry replaced or damaged: open it again
                    log.warning("reading %s failed; opening it again", self.state_db)
                    registry.close()
                    registry, seen = None, None
                    continue
                if seen is not None and now != seen:
                    self.version += 1
                seen = now
        finally:
            if registry is not None:
                registry.close()


class TokenGate:
    """Refuses (403) every request without the token or from elsewhere (see the module)."""

    def __init__(self, app: ASGIApp, token: str, hosts: set[str]) -> None:
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused = self.refusal(request)
        if refused:
            await PlainTextResponse(refused, status_code=403)(scope, receive, send)
            return
        if request.query_params.get("token") != self.token:
            await self.app(scope, receive, send)
            return

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, with_cookie)

    def refusal(self, request: Request) -> str | None:
        if request.headers.get("host") not in self.hosts:
            return "forbidden: unknown host"
        supplied = (
            request.headers.get("x-gadugi-token")
            or request.query_params.get("token")
            or request.cookies.get(COOKIE)
            or ""
        )
        if not secrets.compare_digest(supplied.encode(), self.token.encode()):
            return "forbidden: this dashboard needs the token in the URL gadugi dashboard printed"
        if request.method in ("GET", "HEAD"):
            return None
        header = request.headers.get("x-gadugi-token", "")
        if not secrets.compare_digest(header.encode(), self.token.encode()):
            return "forbidden: an action needs the X-Gadugi-Token header"
        origin = request.headers.get("origin")
        if origin is not None and origin.removeprefix("http://") not in self.hosts:
            return "forbidden: a request from another site"
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "forbidden: a request from another site"
        return None


def create_app(
    root: Path, state_db: Path, token: str, port: int, stopping: Callable[[], bool]
) -> ASGIApp:
    watcher = Watcher(state_db)

    def registry() -> Registry:
        return Registry(state_db, readonly=True)

    def page(title: str, build: Callable[[Registry, float], str]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                reg = registry()
            except NotFoundError:
                body = '<p class="quiet">No orchestrations yet: gadugi run starts one.</p>'
            except GadugiError as exc:  # locked, damaged, or unreadable for the moment
                log.warning("%s", exc)
                return HTMLResponse(render.e(str(exc)), status_code=503)
            else:
                try:
                    body = build(reg, time.time())
                except NotFoundError as exc:
                    return HTMLResponse(render.e(str(exc)), status_code=404)
                except GadugiError as exc:
                    log.warning("%s", exc)
                    return HTMLResponse(render.e(str(exc)), status_code=503)
                finally:
                    reg.close()
            if request.query_params.get("fragment"):
                return HTMLResponse(body)
            return HTMLResponse(
                render.live_page(title, body, token), headers={"Content-Security-Policy": CSP}
            )

        return endpoint

    def link(orch_id: str, task_id: str | None) -> str:
        if task_id is None:
            return f"/orchestrations/{orch_id}"
        return f"/orchestrations/{orch_id}/tasks/{task_id}"

    def overview(reg: Registry, now: float) -> str:
        return render.overview_body(model.overview(reg, now, alive), link)

    def orchestration(request: Request) -> Response:
        orch_id = request.path_params["orch_id"]
        return page(
            orch_id,
            lambda reg, now: render.orchestration_body(
                model.orchestration_detail(reg, orch_id, now), link, actions=True
            ),
        )(request)

    def task(request: Request) -> Response:
        orch_id, task_id = request.path_params["orch_id"], request.path_params["task_id"]

        def build(reg: Registry, now: float) -> str:
            detail = model.task_detail(reg, orch_id, task_id, now, alive)
            back = f'<p><a href="{render.e(link(orch_id, None))}">{render.e(orch_id)}</a></p>'
            return back + render.task_body(
                detail, actions=True, verification_log=model.verification_log(detail)
            )

        return page(task_id, build)(request)

    def stats(reg: Registry, now: float) -> str:
        from ..stats import trends

        return render.stats_body(trends(reg))

    def metrics(request: Request) -> Response:
        try:
            reg = registry()
        except NotFoundError:
            return PlainTextResponse("", media_type="text/plain; version=0.0.4")
        except GadugiError as exc:  # locked, damaged, or unreadable for the moment
            log.warning("%s", exc)
            return PlainTextResponse(str(exc), status_code=503)
        try:
            text = model.metrics(reg, alive)
        except GadugiError as exc:
            log.warning("%s", exc)
            return PlainTextResponse(str(exc), status_code=503)
        finally:
            reg.close()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found", status_code=404)
        return Response(render.asset(name), media_type=ASSETS[name])

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            sent = watcher.version
            yield f"retry: 1000\nevent: hello\ndata: {sent}\n\n"
            quiet = 0.0
            while not stopping():
                await asyncio.sleep(0.1)
                quiet += 0.1
                if watcher.version != sent:
                    sent = watcher.version
                    quiet = 0.0
                    yield f"event: change\ndata: {sent}\n\n"
                elif quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def _check(look: Callable[[Registry], object]) -> Response | None:
        """None when ``look`` finds what an action names; else why not, as its answer:
        404 when it is not there, 503 when the registry cannot be read now."""
        try:
            reg = registry()
            try:
                look(reg)
            finally:
                reg.close()
        except NotFoundError as exc:
            return JSONResponse({"ok": False, "message": str(exc)}, status_code=404)
        except GadugiError as exc:
            log.warning("%s", exc)
            return JSONResponse({"ok": False, "message": str(exc)}, status_code=503)
        return None

    async def _answer(run: Callable[..., actions.Outcome], *args: Any) -> Response:
        """What the command said (200 done, 409 refused), or 503 when it could not be
        started or did not answer in time: its log unwritable, the registry unreadable."""
        try:
            outcome = await asyncio.to_thread(run, *args)
        except (GadugiError, OSError, subprocess.SubprocessError) as exc:
            log.warning("%s", exc)
            return JSONResponse({"ok": False, "message": str(exc)}, status_code=503)
        return JSONResponse(
            {"ok": outcome.ok, "message": outcome.message},
            status_code=200 if outcome.ok else 409,
        )

    def act(
        run: Callable[[Path, str, str], actions.Outcome],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            orch_id, task_id = request.path_params["orch_id"], request.path_params["task_id"]
            if not (actions.ORCH_ID.fullmatch(orch_id) and actions.SAFE_ID.fullmatch(task_id)):
                return JSONResponse({"ok": False, "message": "not a task id"}, status_code=400)
            refused = _check(lambda reg: reg.find_task(task_id, orch_id))
            if refused is not None:
                return refused
            return await _answer(run, root, orch_id, task_id)

        return endpoint

    async def land(request: Request) -> Response:
        orch_id = request.path_params["orch_id"]
        if not actions.ORCH_ID.fullmatch(orch_id):
            return JSONResponse({"ok": False, "message": "not an orchestration id"}, 400)
        refused = _check(lambda reg: reg.orchestration(orch_id))
        if refused is not None:
            return refused
        return await _answer(actions.land, root, orch_id)

    routes = [
        Route("/", page("gadugi", overview)),
        Route("/stats", page("gadugi trends", stats)),
        Route("/metrics", metrics),
        Route("/events", events),
        Route("/static/{name}", static),
        Route("/orchestrations/{orch_id}", orchestration),
        Route("/orchestrations/{orch_id}/tasks/{task_id}", task),
        Route(
            "/api/orchestrations/{orch_id}/tasks/{task_id}/cancel",
            act(actions.cancel),
            methods=["POST"],
        ),
        Route(
            "/api/orchestrations/{orch_id}/tasks/{task_id}/retry",
            act(actions.retry),
            methods=["POST"],
        ),
        Route("/api/orchestrations/{orch_id}/land", land, methods=["POST"]),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher.start()
        try:
            yield
        finally:
            watcher.stop.set()

    app = Starlette(routes=routes, lifespan=lifespan)
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    return TokenGate(app, token, hosts)


def listen(port: int) -> socket.socket:
    """A socket on 127.0.0.1 only (``port`` 0: a free one); OSError when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def serve(root: Path, sock: socket.socket, token: str) -> None:
    """Serve until SIGINT or SIGTERM; open event streams are cut after a second."""
    import uvicorn

    port = sock.getsockname()[1]
    server: uvicorn.Server | None = None

    def stopping() -> bool:
        return server is not None and server.should_exit

    app = create_app(root, root / ".gadugi" / "state.db", token, port, stopping)
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
