"""The editor's web server: one page and a small JSON API on 127.0.0.1 (Starlette on uvicorn).

Safety:
  - it binds 127.0.0.1 only, and every request must carry the session's random token (the `token`
    query parameter or the X-Editor-Token header); anything else gets 403. Requests must name this
    machine as their host (a page elsewhere cannot reach the editor through a rebound DNS name);
  - request bodies are bounded (`MAX_BODY`, 8 MiB): a larger one gets 413;
  - the page never names a path: images are addressed by fixed names, exports by a sanitised stem in
    the editor's working folder, downloads only among the files the editor wrote there;
  - every error is a JSON object {"error": message} that the page shows; tracebacks go to the
    terminal only.
The JAX work runs on the session's single worker thread; the event loop only waits for it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import socket
import threading
import traceback
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import ChunkyGANError
from .session import EditorBusy, EditorSession

__all__ = ["MAX_BODY", "RunningEditor", "make_app", "new_token", "serve", "start"]

MAX_BODY = 8 << 20
TOKEN_HEADER = "x-editor-token"
HOSTS = ("127.0.0.1", "localhost")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                                 b"style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                 b"form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _static_text(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


class _Guard:
    """ASGI middleware: the token and the host on every request, the body limit by Content-Length, and
    security headers on every response."""

    def __init__(self, app, token: str, max_body: int):
        self.app, self.token, self.max_body = app, token.encode(), max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        host = headers.get("host", "").rsplit(":", 1)[0].strip("[]")
        if not secrets.compare_digest(given.encode("latin-1", "replace"), self.token):
            return await _send_json(send, 403, {"error": "forbidden: this address needs the editor's token "
                                                         "(open the URL the editor printed)"})
        if host not in HOSTS:
            return await _send_json(send, 403, {"error": f"forbidden: unexpected host {host!r}"})
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _send_json(send, 413, {"error": f"request too large (limit {self.max_body >> 20} MiB)"})

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": data})


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
    data = await _body(request, limit)
    try:
        value = json.loads(data or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPException(400, "the request body is not JSON") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "the request body must be a JSON object")
    return value


def _endpoint(fn):
    """Errors as JSON messages: the user's (ChunkyGANError) 400, busy 409, anything else 500 with its
    traceback on the terminal only."""

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
        except Exception as e:
            traceback.print_exc()
            return JSONResponse({"error": f"internal error ({type(e).__name__}: {e}); the editor's terminal "
                                          "has the details"}, 500)

    return wrapped


def make_app(session: EditorSession, token: str, *, max_body: int = MAX_BODY):
    """The ASGI application for `session`, guarded by `token`."""

    async def work(fn, *args, idle=True):
        """Run `fn` on the session's one worker thread (all JAX work); refused at once while a region
        projection holds that thread (it would otherwise wait for the projection to end)."""
        if idle:
            session.check_idle()
        return await asyncio.get_running_loop().run_in_executor(session.executor, functools.partial(fn, *args))

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png")

    @_endpoint
    async def index(request):
        html = _static_text("index.html").replace("{{TOKEN}}", token)
        return Response(html, media_type="text/html; charset=utf-8")

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
            return png(ready if ready is not None else await work(session.image_png, name))
        except KeyError:
            raise HTTPException(404, f"no image {name!r}") from None

    @_endpoint
    async def preview(request):
        return png(await work(session.preview, (await _json(request, max_body)).get("edit")))

    @_endpoint
    async def edits(request):
        return JSONResponse(await work(session.commit, (await _json(request, max_body)).get("edit")))

    @_endpoint
    async def undo(request):
        return JSONResponse(await work(session.undo))

    @_endpoint
    async def redo(request):
        return JSONResponse(await work(session.redo))

    @_endpoint
    async def blend(request):
        return JSONResponse(await work(session.set_blend, (await _json(request, max_body)).get("blend")))

    @_endpoint
    async def start_task(request):
        body = await _json(request, max_body)
        kind = request.path_params["kind"]
        return JSONResponse(session.start_task(kind, body.get("region"), body.get("steps"), body.get("target")))

    @_endpoint
    async def task(request):
        return JSONResponse({"task": None if session.task is None else session.task.to_json(),
                             "version": session.version})

    @_endpoint
    async def cancel(request):
        return JSONResponse(session.cancel_task())

    @_endpoint
    async def add_direction(request):
        data = await _body(request, max_body)
        return JSONResponse(await work(session.add_direction, request.query_params.get("name", "direction"), data, idle=False))

    @_endpoint
    async def export(request):
        return JSONResponse(await work(session.export, (await _json(request, max_body)).get("name")))

    @_endpoint
    async def download(request):
        try:
            path = session.written_file(request.path_params["name"])
        except KeyError:
            raise HTTPException(404, "no such exported file") from None
        return FileResponse(path, filename=path.name)

    async def http_error(request, exc):
        return JSONResponse({"error": exc.detail}, exc.status_code)

    routes = [
        Route("/", index), Route("/static/{name}", static), Route("/api/state", state),
        Route("/api/image/{name}.png", image), Route("/api/preview", preview, methods=["POST"]),
        Route("/api/edits", edits, methods=["POST"]), Route("/api/undo", undo, methods=["POST"]),
        Route("/api/redo", redo, methods=["POST"]), Route("/api/blend", blend, methods=["POST"]),
        Route("/api/task/{kind}", start_task, methods=["POST"]), Route("/api/task", task),
        Route("/api/cancel", cancel, methods=["POST"]), Route("/api/directions", add_direction, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]), Route("/api/files/{name}", download),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return _Guard(app, token, max_body)


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", int(port)))
    except OSError as e:
        sock.close()
        raise ChunkyGANError(f"cannot listen on 127.0.0.1:{port} ({e.strerror or e})") from None
    sock.listen(64)
    return sock


def _server(session, token, port):
    import uvicorn

    sock = _bind(port)
    config = uvicorn.Config(make_app(session, token), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    return server, sock, url


def serve(session: EditorSession, *, port: int = 0, token: str | None = None, announce=print) -> None:
    """Serve `session` until interrupted; `announce(url)` is called once the address is known."""
    server, sock, url = _server(session, token or new_token(), port)
    announce(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        session.close()


class RunningEditor:
    """An editor served from a background thread (for scripts and tests): `.url`, `.token`, `.stop()`."""

    def __init__(self, session: EditorSession, *, port: int = 0, token: str | None = None):
        self.session, self.token = session, token or new_token()
        self.server, self._sock, self.url = _server(session, self.token, port)
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
