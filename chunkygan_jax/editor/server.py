"""The editor's web server: one page and a small JSON API on 127.0.0.1 (Starlette on uvicorn).

Safety:
  - it binds 127.0.0.1 only, and every request must carry the session's random token: the
    X-Editor-Token header, or the HttpOnly SameSite=Strict cookie that opening the printed address
    (`/?token=...`) sets before redirecting to `/` (GET requests also take the `token` query
    parameter). Anything else gets 403. Requests must name this machine as their host (a page
    elsewhere cannot reach the editor through a rebound DNS name);
  - a request with an Origin must come from the editor's own origin; a state-changing request (POST)
    must send JSON (`application/json`; an uploaded direction `application/octet-stream`), which no
    cross-site form can, and one without an Origin must carry the token in its header;
  - request bodies are bounded (`MAX_BODY`, 8 MiB): a larger one gets 413; JSON bodies are checked
    against their route's schema (`schema.py`) before the session sees them;
  - slow clients cannot hold connections: a request's headers must arrive within `Timeouts.headers`,
    its body within `Timeouts.body` (else 408), an idle keep-alive connection is closed after
    `Timeouts.keep_alive`, and while `MAX_CONNECTIONS` connections are open, further requests get 503;
  - the page never names a path: images are addressed by fixed names, exports by a sanitised stem in
    the editor's working folder, downloads only among the files the editor wrote there, opened without
    following links and checked to be the very files written;
  - every error is a JSON object {"error": message} with a 4xx status that the page shows. A 500 is a
    bug: its traceback goes to the log (`chunkygan_jax.editor`) once, without the request's body. A
    client that goes away mid-request is not an error.
Every change of the document and all JAX work run on the session's single worker thread, in the
order the requests were accepted; the event loop only waits for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import secrets
import socket
import threading
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ChunkyGANError
from . import schema
from .session import EditorBusy, EditorSession

__all__ = ["MAX_BODY", "MAX_CONNECTIONS", "RunningEditor", "Timeouts", "make_app", "new_token", "serve", "start"]

MAX_BODY = 8 << 20
MAX_CONNECTIONS = 64
TOKEN_HEADER = "x-editor-token"
HOSTS = ("127.0.0.1", "localhost")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
BINARY_ROUTES = ("/api/directions",)  # POST bodies that are bytes, not JSON
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                                 b"style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                 b"form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]
log = logging.getLogger("chunkygan_jax.editor")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds a client may take: for a request's headers (from the connection's opening or the end of
    the previous response), for its whole body, and idle between keep-alive requests."""

    headers: float = 10.0
    body: float = 30.0
    keep_alive: float = 5.0


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _static_text(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _cookie_name(port) -> str:
    return f"chunkygan_editor_{port}"  # cookies ignore ports: one name per editor on this host


def _cookies(header: str) -> dict:
    pairs = (part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}


class _BodyTimeout(Exception):
    """The request's body did not arrive within Timeouts.body."""


class _Guard:
    """ASGI middleware: the token, host, origin and content type of every request, the body limit by
    Content-Length, the body's deadline, and security headers on every response."""

    def __init__(self, app, token: str, max_body: int, body_timeout: float):
        self.app, self.token, self.max_body, self.body_timeout = app, token.encode(), max_body, body_timeout

    def _valid(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode("latin-1", "replace"), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        method, path = scope["method"], scope["path"]
        port = (scope.get("server") or ("", 0))[1]
        cookie = _cookies(headers.get("cookie", "")).get(_cookie_name(port))
        in_header, in_query = headers.get(TOKEN_HEADER), (query.get("token") or [None])[0]
        reading = method in ("GET", "HEAD")
        if not (self._valid(in_header) or self._valid(cookie) or (reading and self._valid(in_query))):
            return await _send_json(send, 403, {"error": "forbidden: this address needs the editor's token "
                                                         "(open the URL the editor printed)"})
        host = headers.get("host", "").rsplit(":", 1)[0].strip("[]")
        if host not in HOSTS:
            return await _send_json(send, 403, {"error": f"forbidden: unexpected host {host!r}"})
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{h}:{port}" for h in HOSTS}:
            return await _send_json(send, 403, {"error": f"forbidden: requests from {origin[:100]!r} are refused"})
        if not reading:
            if origin is None and not self._valid(in_header):
                return await _send_json(send, 403, {"error": "forbidden: a request without an Origin must carry "
                                                             "the token in the X-Editor-Token header"})
            wanted = "application/octet-stream" if path in BINARY_ROUTES else "application/json"
            given = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if given != wanted:
                return await _send_json(send, 415, {"error": f"this request needs Content-Type: {wanted}"})
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _send_json(send, 413, {"error": f"request too large (limit {self.max_body >> 20} MiB)"})
        if reading and path == "/" and self._valid(in_query):  # the printed address: the token becomes a cookie
            return await _send(send, 303, b"", [
                (b"location", b"/"),
                (b"set-cookie", f"{_cookie_name(port)}={in_query}; HttpOnly; SameSite=Strict; Path=/".encode())])

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + SECURITY_HEADERS)
            await send(message)

        await self.app(scope, self._timed(receive), send_with_headers)

    def _timed(self, receive):
        """`receive` with a deadline for the whole body (after it, receive is passed through)."""
        loop = asyncio.get_running_loop()
        deadline, done = loop.time() + self.body_timeout, False

        async def timed():
            nonlocal done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise _BodyTimeout from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed


async def _send(send, status: int, data: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(data)).encode())] + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": data})


async def _send_json(send, status: int, body: dict) -> None:
    await _send(send, status, json.dumps(body).encode(), [(b"content-type", b"application/json")])


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it grows past `limit` (chunked bodies too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request too large (limit {limit >> 20} MiB)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request, limit: int) -> dict:
    return schema.loads(await _body(request, limit))


def _endpoint(fn):
    """Errors as JSON messages: the user's (ChunkyGANError) 400, busy 409, a body too slow 408, a client
    gone nothing at all; anything else is a bug: 500, its traceback logged once (method and path only)."""

    @functools.wraps(fn)
    async def wrapped(request):
        try:
            return await fn(request)
        except HTTPException:
            raise
        except EditorBusy as e:
            return JSONResponse({"error": str(e)}, 409)
        except ChunkyGANError as e:
            return JSONResponse({"error": str(e)}, 400)
        except _BodyTimeout:
            return JSONResponse({"error": "the request's body did not arrive in time"}, 408,
                                headers={"connection": "close"})
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it
        except Exception as e:
            log.error("internal error in %s %s", request.method, request.url.path, exc_info=True)
            return JSONResponse({"error": f"internal error ({type(e).__name__}); the editor's terminal "
                                          "has the details"}, 500)

    return wrapped


def make_app(session: EditorSession, token: str, *, max_body: int = MAX_BODY, timeouts: Timeouts = Timeouts()):
    """The ASGI application for `session`, guarded by `token`."""

    async def work(name, *args):
        """Run the session's operation `name` on its one worker thread, behind the changes accepted
        before it; refused at once (409) while a region projection holds that thread."""
        return await asyncio.wrap_future(session.request(name, *args))

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png")

    @_endpoint
    async def index(request):
        return Response(_static_text("index.html"), media_type="text/html; charset=utf-8")

    @_endpoint
    async def static(request):
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPException(404, "not found")
        return Response(_static_text(name), media_type=STATIC[name])

    @_endpoint
    async def state(request):
        return JSONResponse(session.state())

    @_endpoint
    async def image(request):
        name = request.path_params["name"]
        try:
            ready = session.ready_png(name)  # the unedited images, and the current one once rendered
            return png(ready if ready is not None else await work("image_png", name))
        except KeyError:
            raise HTTPException(404, f"no image {name[:64]!r}") from None

    @_endpoint
    async def preview(request):
        session.check_idle()  # before reading the body: 409 at once
        return png(await work("preview", schema.edit_body(await _json(request, max_body))))

    @_endpoint
    async def edits(request):
        session.check_idle()  # before reading the body: 409 at once
        return JSONResponse(await work("commit", schema.edit_body(await _json(request, max_body))))

    @_endpoint
    async def undo(request):
        session.check_idle()  # before reading the body: 409 at once
        schema.empty_body(await _json(request, max_body))
        return JSONResponse(await work("undo"))

    @_endpoint
    async def redo(request):
        session.check_idle()  # before reading the body: 409 at once
        schema.empty_body(await _json(request, max_body))
        return JSONResponse(await work("redo"))

    @_endpoint
    async def blend(request):
        session.check_idle()  # before reading the body: 409 at once
        return JSONResponse(await work("set_blend", schema.blend_body(await _json(request, max_body))))

    @_endpoint
    async def start_task(request):
        body = schema.task_body(await _json(request, max_body))
        kind = request.path_params["kind"]
        return JSONResponse(session.start_task(kind, body["region"], body.get("steps"), body.get("target")))

    @_endpoint
    async def task(request):
        return JSONResponse({"task": None if session.task is None else session.task.to_json(),
                             "version": session.version})

    @_endpoint
    async def cancel(request):
        schema.empty_body(await _json(request, max_body))
        return JSONResponse(session.cancel_task())

    @_endpoint
    async def add_direction(request):
        session.check_idle()
        name = schema.text(request.query_params.get("name", "direction"), "name")
        return JSONResponse(await work("add_direction", name, await _body(request, max_body)))

    @_endpoint
    async def samples(request):
        def position(key, default, most):
            text = request.query_params.get(key, default)
            if not (text.isdigit() and len(text) <= 9 and int(text) <= most):
                raise HTTPException(400, f"{key} is an integer 0..{most}, got {text[:16]!r}")
            return int(text)
        seeds = await work("panel_seeds", position("start", "0", 10**7), position("count", "12", 100))
        return JSONResponse({"seeds": seeds})

    @_endpoint
    async def sample(request):
        text = request.path_params["seed"]
        if not (text.isdigit() and len(text) <= 10 and int(text) < 2**32):
            raise HTTPException(404, f"no sample {text[:16]!r}: seeds are 0..{2**32 - 1}")
        return png(await work("sample_png", int(text)))

    @_endpoint
    async def fit_labels(request):
        session.check_idle()  # before reading the body: 409 at once
        return JSONResponse(await work("fit_labels", schema.labels_body(await _json(request, max_body))))

    @_endpoint
    async def localized(request):
        session.check_idle()  # before reading the body: 409 at once
        return JSONResponse(await work("localized", schema.localized_body(await _json(request, max_body))))

    @_endpoint
    async def export(request):
        session.check_idle()  # before reading the body: 409 at once
        return JSONResponse(await work("export", schema.export_body(await _json(request, max_body))))

    @_endpoint
    async def download(request):
        name = request.path_params["name"]
        try:
            data = session.read_written(name)
        except KeyError:
            raise HTTPException(404, "no such exported file") from None
        return Response(data, media_type="image/png" if name.endswith(".png") else "application/octet-stream",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def http_error(request, exc):
        return JSONResponse({"error": exc.detail}, exc.status_code)

    routes = [
        Route("/", index), Route("/static/{name}", static), Route("/api/state", state),
        Route("/api/image/{name}.png", image), Route("/api/preview", preview, methods=["POST"]),
        Route("/api/edits", edits, methods=["POST"]), Route("/api/undo", undo, methods=["POST"]),
        Route("/api/redo", redo, methods=["POST"]), Route("/api/blend", blend, methods=["POST"]),
        Route("/api/task/{kind}", start_task, methods=["POST"]), Route("/api/task", task),
        Route("/api/cancel", cancel, methods=["POST"]), Route("/api/directions", add_direction, methods=["POST"]),
        Route("/api/samples", samples), Route("/api/sample/{seed}.png", sample),
        Route("/api/labelled", fit_labels, methods=["POST"]),
        Route("/api/localized", localized, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]), Route("/api/files/{name}", download),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return _Guard(app, token, max_body, timeouts.body)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for a request's headers (`config.headers_timeout`, from
    the connection's opening or the end of the previous response): a connection that has no request
    in progress when it passes is closed. uvicorn's own keep-alive timeout stops once any byte
    arrives, so a client that stalls inside its headers would otherwise hold the connection forever."""

    _deadline = None
    _armed_for = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self):
        super().on_response_complete()
        self._arm()

    def handle_events(self):
        super().handle_events()
        if self._deadline is not None and self.cycle is not self._armed_for:  # a request's headers came
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc):
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self):
        if self._deadline is not None:
            self._deadline.cancel()
        self._armed_for = self.cycle
        self._deadline = self.loop.call_later(self.config.headers_timeout, self._late)

    def _late(self):
        self._deadline = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", int(port)))
    except OSError as e:
        sock.close()
        raise ChunkyGANError(f"cannot listen on 127.0.0.1:{port} ({e.strerror or e})") from None
    sock.listen(64)
    return sock


def _server(session, token, port, timeouts: Timeouts):
    import uvicorn

    sock = _bind(port)
    config = uvicorn.Config(make_app(session, token, timeouts=timeouts), log_level="warning", access_log=False,
                            lifespan="off", http=_Protocol, timeout_keep_alive=timeouts.keep_alive,
                            limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=2)
    config.headers_timeout = timeouts.headers
    server = uvicorn.Server(config)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    return server, sock, url


def serve(session: EditorSession, *, port: int = 0, token: str | None = None, announce=print,
          timeouts: Timeouts = Timeouts()) -> None:
    """Serve `session` until interrupted; `announce(url)` is called once the address is known."""
    server, sock, url = _server(session, token or new_token(), port, timeouts)
    announce(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        session.close()


class RunningEditor:
    """An editor served from a background thread (for scripts and tests): `.url`, `.token`, `.stop()`."""

    def __init__(self, session: EditorSession, *, port: int = 0, token: str | None = None,
                 timeouts: Timeouts = Timeouts()):
        self.session, self.token = session, token or new_token()
        self.server, self._sock, self.url = _server(session, self.token, port, timeouts)
        self.base = self.url.split("/?", 1)[0]
        self.address = self._sock.getsockname()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.02)
        if not self.server.started:
            raise ChunkyGANError("the editor's server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()


def start(session: EditorSession, **kw) -> RunningEditor:
    return RunningEditor(session, **kw)
