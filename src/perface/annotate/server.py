"""The annotation web server: a small Starlette app served by uvicorn (``pip install "perface[annotate]"``).

Routes (everything else is 404):

=========================================  ===========================================================
``GET /``                                  the annotation page (``static/index.html``)
``GET /static/annotate.js|annotate.css``   its script and style
``GET /api/next?annotator=ID``             the annotator's next question and progress
``POST /api/answer``                       JSON ``{"annotator", "item", "answer": "a"|"b", "ms"}``
``GET /api/image/TOKEN/reference|a|b``     one image of a question
=========================================  ===========================================================

Safety: :func:`serve` binds to 127.0.0.1 unless told otherwise, and then only accepts requests
whose ``Host`` is a loopback name (no DNS rebinding). Serving to other machines needs
``allow_remote=True`` and an access token, checked on every request (``?token=`` once, after
which the page keeps it in an HttpOnly cookie; or ``Authorization: Bearer``). Images are named
by question and slot, never by path, and each file is checked to lie inside the study's declared
folders before it is sent. Bad requests get a 4xx answer with a JSON ``{"error": ...}`` message
and never reach the answers file. Nothing about an annotator is logged or stored but the id
they type (uvicorn's access log, which holds client addresses, is off).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO, Union

from ..imageio import IMAGE_SUFFIXES
from .assign import Assigner
from .store import STORE_FILE, AnswerConflict, AnswerStore, check_annotator
from .study import SLOTS, Study, load_study

if TYPE_CHECKING:
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp

__all__ = ["create_app", "serve", "check_images", "is_loopback", "access_token", "TOKEN_ENV"]

TOKEN_ENV = "PERFACE_ANNOTATE_TOKEN"
COOKIE = "perface_annotate_token"
MAX_BODY = 4096
MAX_MS = 24 * 3600 * 1000
_STATIC = {"annotate.js": "text/javascript; charset=utf-8", "annotate.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_ANSWER_KEYS = {"annotator", "item", "answer", "ms"}


def _extra_missing() -> ImportError:
    return ImportError('perface annotate serve needs the web server packages: pip install "perface[annotate]"')


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def check_images(study: Study) -> None:
    """Raise ``ValueError`` naming the images of ``study`` that are missing, not images, or
    outside its declared folders (``study.json`` ``roots``), so that serving never fails midway."""
    roots = [Path(os.path.realpath(r)) for r in study.roots]
    bad: list[str] = []
    for item in study.items.values():
        for slot in SLOTS:
            path = study.shown(item, slot)
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                bad.append(f"{path} (missing or not an image)")
            elif not _inside(path, roots):
                bad.append(f"{path} (outside the declared folders {', '.join(map(str, roots))})")
    if bad:
        unique = sorted(set(bad))
        raise ValueError(
            f"{study.root}: {len(unique)} image(s) cannot be served: {'; '.join(unique[:5])}"
            + (" ..." if len(unique) > 5 else "")
            + "; restore the files, or make a new study"
        )


def _error(status: int, message: str) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def create_app(
    study: Study,
    store: AnswerStore,
    token: Optional[str] = None,
    answers_per_triplet: int = 0,
    allowed_hosts: Optional[Sequence[str]] = None,
) -> ASGIApp:
    """The Starlette app serving ``study`` and writing answers to ``store``.

    ``token``: when set, every request must carry it. ``allowed_hosts``: accepted ``Host``
    header names (None: any). Raises ``ImportError`` without the ``annotate`` extra.
    """
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        from starlette.requests import Request
        from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
        from starlette.routing import Route
    except ImportError as exc:
        raise _extra_missing() from exc

    assigner = Assigner(study, store, answers_per_triplet)
    roots = [Path(os.path.realpath(r)) for r in study.roots]
    static = resources.files("perface.annotate") / "static"
    page = (static / "index.html").read_bytes()
    assets = {name: ((static / name).read_bytes(), kind) for name, kind in _STATIC.items()}

    def question(annotator: str) -> dict[str, Any]:
        item, progress = assigner.next(annotator)
        reply: dict[str, Any] = {"done": item is None, "progress": progress.to_dict()}
        if item is not None:
            reply["item"] = assigner.token(item.id)
        return reply

    async def index(request: Request) -> Response:
        if token is not None and "token" in request.query_params:  # valid (checked below): keep it in a cookie
            response = RedirectResponse(
                "/"
                + (f"?annotator={request.query_params['annotator']}" if "annotator" in request.query_params else ""),
                status_code=303,
            )
            response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https")
            return response
        return Response(page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    async def asset(request: Request) -> Response:
        body, kind = assets.get(request.path_params["name"], (None, None))
        if body is None:
            return _error(404, "no such file")
        return Response(body, media_type=kind)

    async def next_question(request: Request) -> Response:
        try:
            annotator = check_annotator(request.query_params.get("annotator"))
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse(await run_in_threadpool(question, annotator), headers={"Cache-Control": "no-store"})

    async def answer(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "send the answer as JSON (Content-Type: application/json)")
        try:
            declared = int(request.headers.get("content-length", "0"))
        except ValueError:
            return _error(400, "malformed Content-Length header")
        if declared > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(data, dict):
            return _error(400, "request body must be a JSON object {annotator, item, answer, ms}")
        unknown = sorted(set(data) - _ANSWER_KEYS)
        if unknown:
            return _error(400, f"unknown field(s) {', '.join(unknown)}; expected annotator, item, answer, ms")
        try:
            annotator = check_annotator(data.get("annotator"))
        except ValueError as exc:
            return _error(400, str(exc))
        if data.get("answer") not in ("a", "b"):
            return _error(400, f'answer must be "a" or "b", got {json.dumps(data.get("answer"))}')
        ms = data.get("ms")
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= MAX_MS):
            return _error(400, f"ms must be a whole number of milliseconds from 0 to {MAX_MS}, or null")
        item = assigner.item(data["item"]) if isinstance(data.get("item"), str) else None
        if item is None:
            return _error(404, "unknown item; reload the page to get your next question")
        try:
            recorded = await run_in_threadpool(store.record, annotator, item.id, data["answer"], ms)
        except AnswerConflict as exc:
            return _error(409, str(exc))
        reply = await run_in_threadpool(question, annotator)
        return JSONResponse({"recorded": recorded, "next": reply}, headers={"Cache-Control": "no-store"})

    async def image(request: Request) -> Response:
        item = assigner.item(request.path_params["token"])
        slot = request.path_params["slot"]
        if item is None or slot not in SLOTS:
            return _error(404, "no such image")
        path = study.shown(item, slot)
        if not _inside(path, roots) or path.suffix.lower() not in IMAGE_SUFFIXES:
            return _error(403, "image outside the study's declared folders")
        if not path.is_file():
            return _error(404, "image file missing")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=86400"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    def guard(app: Callable) -> Callable:
        """ASGI middleware: token check (when set) and the security headers on every response."""

        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            if token is not None and not _has_token(scope, token):
                response = _error(
                    401,
                    "access token missing or wrong: open the address printed by "
                    "'perface annotate serve' (it ends in ?token=...)",
                )
                return await response(scope, receive, _with_headers(send))
            return await app(scope, receive, _with_headers(send))

        return wrapped

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/static/{name}", asset),
        Route("/api/next", next_question),
        Route("/api/answer", answer, methods=["POST"]),
        Route("/api/image/{token}/{slot}", image),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else []
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    return guard(app)


def _with_headers(send: Callable) -> Callable:
    async def sending(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _ in headers}
            headers += [
                (k.lower().encode(), v.encode()) for k, v in _HEADERS.items() if k.lower().encode() not in names
            ]
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _has_token(scope: dict[str, Any], token: str) -> bool:
    from starlette.requests import Request

    request = Request(scope)
    offered = [request.query_params.get("token", ""), request.cookies.get(COOKIE, "")]
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        offered.append(auth[7:].strip())
    return any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered)


def access_token(host: str, allow_remote: bool = False, token: Optional[str] = None) -> Optional[str]:
    """The token requests must carry when serving on ``host`` (None: no token needed).

    Loopback hosts need none unless one is given (``token`` or ``$PERFACE_ANNOTATE_TOKEN``).
    Any other host is refused without ``allow_remote`` (``ValueError``), and with it always has a
    token: the one given, else a random one (24 bytes, URL-safe).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if is_loopback(host):
        return token
    if not allow_remote:
        raise ValueError(
            f"--host {host} would let other machines reach the annotation page; add --allow-remote "
            "to mean it (an access token is then required), or keep the default 127.0.0.1"
        )
    return token or secrets.token_urlsafe(24)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio then turns Nagle off on each connection (TCP_NODELAY), else
    # every keep-alive reply written in two parts waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or stop the program using it",
        ) from None
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    return sock


def serve(
    study_dir: Union[str, Path],
    host: str = "127.0.0.1",
    port: int = 8765,
    token: Optional[str] = None,
    allow_remote: bool = False,
    answers_per_triplet: int = 0,
    quiet: bool = False,
    stream: Optional[TextIO] = None,
) -> int:
    """Serve the annotation page of the study in ``study_dir`` until interrupted (Ctrl-C).

    ``host``: where to listen; anything but a loopback address needs ``allow_remote=True``, and
    then a token is required (``token``, else ``$PERFACE_ANNOTATE_TOKEN``, else a random one).
    ``port``: 0 picks a free port. The address to open (with the token) is printed to
    ``stream`` (default stdout) before serving. Returns the number of answers stored when it
    stops. Raises ``ValueError`` for a non-loopback ``host`` without ``allow_remote``, for
    images that cannot be served, or when another server is using the study;
    ``ImportError`` without the ``annotate`` extra.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise _extra_missing() from exc
    from filelock import Timeout

    from .._io import file_lock

    stream = sys.stdout if stream is None else stream
    loopback = is_loopback(host)
    token = access_token(host, allow_remote, token)
    study = load_study(study_dir)
    check_images(study)
    lock = file_lock(study.root / STORE_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(
            f"{study.root}: another 'perface annotate serve' is serving this study; stop it first, or open its address"
        ) from None
    try:
        with AnswerStore(study.root / STORE_FILE, study.sha256) as store:
            allowed = ["127.0.0.1", "localhost", "::1", "[::1]"] if loopback else None
            app = create_app(study, store, token, answers_per_triplet, allowed)
            sock = _bind(host, port)
            shown = host if ":" not in host else f"[{host.strip('[]')}]"
            address = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
            print(
                f"serving {len(study.triplets)} triplets + {len(study.catch)} catch trials of {study.root}", file=stream
            )
            print(f"open {address}", file=stream)
            if not quiet:
                print(
                    "each annotator types an id (a pseudonym); answers are saved as they are given; Ctrl-C stops",
                    file=stream,
                )
            stream.flush()
            config = uvicorn.Config(
                app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5
            )
            uvicorn.Server(config).run(sockets=[sock])
            return len(store.answers())
    finally:
        lock.release()
