"""An HTTP service over a singer library, on the Python standard library alone (no web framework).

Endpoints (every response but the page's files is JSON; errors are ``{"error": "..."}``, never a traceback):

=============================  ===========================================================================
``GET  /``                     the web page (``singerid/web``: plain HTML, JS and CSS, nothing loaded from
                               elsewhere); it and its ``/app.js`` and ``/app.css`` never need the token
``GET  /health``               ``{"status": "ok", "singers": n, "dim": d, "max_upload_bytes": b}``; never
                               needs the token
``POST /identify?top_k=5``     body: an audio file (any format FFmpeg reads) ->
                               ``{"matches": [{"singer_id", "score"}, ...], "unknown": bool, "threshold"}``;
                               ``unknown`` when the best score is below the library's ``threshold`` (null
                               when it has none; the closest candidates are still listed) or the library is
                               empty
``POST /verify?singer_id=X``   body: audio -> ``{"singer_id", "score", "accepted", "threshold"}``
``GET  /similar?singer_id=X``  ``&top_k=5`` -> ``{"matches": [...]}``
``GET  /singers?q=text``       ``&limit=100`` -> ``{"singers": [...], "matched": m, "total": n}``: the first
                               ``limit`` enrolled ids containing ``q``, sorted, both regardless of case and
                               accents (``folded``); ``matched`` ids contain ``q``, ``total`` are enrolled
``POST /enroll?singer_id=X``   body: audio -> ``{"enrolled": X, "replaced": false, "singers": n}``; adds the
                               clip's windows to the singer (a new singer is created), as ``singerid enroll``
                               adds tracks; ``&replace=1`` replaces what the singer had (``singerid serve``
                               saves the library when it stops, on Ctrl-C or SIGTERM). Ids are any Unicode
                               text except empty or blank ones, ones over 200 characters, and ones with
                               control characters or path separators (see ``check_singer_id``).
=============================  ===========================================================================

Uploads: the audio is either the raw body (``curl --data-binary @song.wav``) or a ``multipart/form-data`` form
(``curl -F file=@song.wav``, what browsers send): the part named ``file``, else the first part with a filename.
The body streams to a temporary file (never whole in memory); at most ``max_decodes`` uploads (default 2) are
decoded by ``singerid.audio.load_audio`` at 16 kHz and embedded by the caller's ``embed(wave, sample_rate)`` at
once, the others wait their turn. A form is parsed in memory, a few times its size, inside that limit.

Token: with ``make_server(..., token=T)`` every request but ``GET /health`` and the page's files needs
``Authorization: Bearer T`` (the page holds no data; it asks for the token and sends it).
Bind to loopback unless a token or a proxy guards the port (``exposure_warning`` says when neither does).

Status codes: 400 bad audio, parameters, singer id or body; 401 no or wrong token; 404 unknown singer or path;
405 wrong method; 408 the upload stalled for ``read_timeout`` seconds (default 30; the connection is then
closed); 411 no Content-Length; 413 body over ``max_bytes`` (default 50 MiB); 500 anything unexpected (logged
with its traceback on the server). Each request is logged at INFO on ``singerid.serve.access`` (client, request
line, status, response bytes, milliseconds); faults on ``singerid.serve``.
"""

from __future__ import annotations

import contextlib
import email.policy
import functools
import hmac
import importlib.resources
import ipaddress
import json
import logging
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable
from email.feedparser import BytesFeedParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import numpy as np

from singerid.audio import AudioError, load_audio
from singerid.errors import SingerIdError

if TYPE_CHECKING:
    from singerid.library import Match, SingerLibrary

SAMPLE_RATE = 16000
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_TOP_K = 1000
MAX_SINGER_ID_CHARS = 200
READ_TIMEOUT_SECONDS = 30.0
MAX_DECODES = 2
CHUNK_BYTES = 64 * 1024
# The email parser keeps one object per line: a form with over one line break per this many bytes on average is
# refused rather than parsed (uploads of random bytes have one per 128).
MULTIPART_BYTES_PER_LINE_BREAK = 32
# After refusing an upload, read and drop up to this much of it, so the client sees the answer, not a reset.
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 2.0
# The web page's files (package data under singerid/web), served without the token.
WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
PUBLIC_PATHS = {"/health", *WEB_FILES}
# Nothing but this server's own files and answers: no outside script, style, font, image or connection.
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}

logger = logging.getLogger(__name__)
access_logger = logging.getLogger(f"{__name__}.access")

Embed = Callable[[np.ndarray, int], np.ndarray]


class ServeError(SingerIdError):
    """The service cannot start (e.g. its port is taken, or its token is unusable); the message says why."""


class SingerIdRefusedError(SingerIdError, ValueError):
    """A singer id the service does not enroll; the message says what is wrong with it."""


class RequestError(Exception):
    """A request the service refuses: the HTTP status and the message sent back as ``{"error": ...}``."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class WebFile(NamedTuple):
    """A file of the web page, as sent."""

    body: bytes
    content_type: str


@functools.cache
def web_file(path: str) -> WebFile:
    """The page's file served at ``path`` (a key of WEB_FILES), read once from the package."""
    name, content_type = WEB_FILES[path]
    return WebFile(importlib.resources.files("singerid").joinpath("web", name).read_bytes(), content_type)


class SingerServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the library, the embedding function and the request limits."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting to be accepted (the base class's 5 refuses bursts of clients)

    def __init__(
        self,
        address: tuple[str, int],
        library: SingerLibrary,
        embed: Embed,
        *,
        max_bytes: int,
        read_timeout: float,
        max_decodes: int,
        token: str | None,
    ) -> None:
        super().__init__(address, _Handler)
        self.library = library
        self.embed = embed
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.token = token
        self.decode_slots = threading.BoundedSemaphore(max_decodes)
        # Enrolment and the singer count it reports happen together (the library also locks its own state).
        self.enroll_lock = threading.Lock()


def make_server(
    library: SingerLibrary,
    embed: Embed,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    max_decodes: int = MAX_DECODES,
    token: str | None = None,
) -> SingerServer:
    """A server bound to ``host:port`` (port 0 picks a free one: see ``server_address``); call serve_forever().

    ``read_timeout``: seconds a connection may stay silent; ``max_decodes``: uploads decoded and embedded at once;
    ``token``: when given, every request but ``GET /health`` must send ``Authorization: Bearer <token>``.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if read_timeout <= 0:
        raise ValueError(f"read_timeout must be positive, got {read_timeout}")
    if max_decodes < 1:
        raise ValueError(f"max_decodes must be at least 1, got {max_decodes}")
    if token is not None and (not token or " " in token or not token.isprintable()):
        raise ServeError("the token must be non-empty, without spaces or control characters (it goes in a header)")
    return SingerServer(
        (host, port),
        library,
        embed,
        max_bytes=max_bytes,
        read_timeout=read_timeout,
        max_decodes=max_decodes,
        token=token,
    )


def check_singer_id(singer_id: str) -> str:
    """``singer_id`` if the service may enroll it; SingerIdRefusedError saying why not otherwise."""
    if not singer_id.strip():
        raise SingerIdRefusedError("singer_id is empty or only whitespace")
    if len(singer_id) > MAX_SINGER_ID_CHARS:
        raise SingerIdRefusedError(
            f"singer_id is {len(singer_id)} characters long; at most {MAX_SINGER_ID_CHARS} are allowed"
        )
    for character in singer_id:
        if unicodedata.category(character) in ("Cc", "Zl", "Zp"):
            raise SingerIdRefusedError(
                f"singer_id {singer_id!r} contains the control or line-break character U+{ord(character):04X}"
            )
        if character in "/\\":
            raise SingerIdRefusedError(f"singer_id {singer_id!r} contains the path separator {character!r}")
    return singer_id


def exposure_warning(host: str, token: str | None) -> str | None:
    """A one-line warning when ``host`` is reachable from other machines and no token guards it, else None."""
    if token or _is_loopback(host):
        return None
    return (
        f"serving on {host or 'every interface'} without a token: anyone who can reach this port can identify, "
        "verify and enroll (or overwrite) singers; pass --token, or bind to 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every interface)
        return False


class _Handler(BaseHTTPRequestHandler):
    server: SingerServer
    server_version = "singerid"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing --------------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # the base class puts it on the connection
        super().setup()

    def handle_one_request(self) -> None:
        """Handle the request, then write its access line (once the response is out, to time all of it)."""
        started = time.perf_counter()
        self.status: int | None = None
        self.sent_bytes = 0
        super().handle_one_request()
        if self.status is not None:  # None: the client sent no request, or stalled before its end
            access_logger.info(
                '%s "%s" %d %d %.1fms',
                self.address_string(),
                self.requestline.encode("unicode_escape").decode("ascii"),
                self.status,
                self.sent_bytes,
                1000 * (time.perf_counter() - started),
            )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Note the status for the access line (see handle_one_request)."""
        self.status = int(code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's refusals (a malformed request, an unsupported method) as JSON, like the others."""
        self.close_connection = True
        self._send(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase})

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body_read = False
        self.route = url.path
        routes = _ROUTES.get(url.path)
        try:
            if method != "GET" or url.path not in PUBLIC_PATHS:
                self._authorize()
            if routes is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            if method not in routes:
                allowed = ", ".join(routes)
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} takes {allowed}", headers={"Allow": allowed}
                )
            answer = routes[method](self)
            if isinstance(answer, WebFile):
                self._respond(HTTPStatus.OK, answer.body, answer.content_type, WEB_HEADERS)
            else:
                self._send(HTTPStatus.OK, answer)
        except RequestError as error:
            self._send(error.status, {"error": error.message}, error.headers)
        except SingerIdError as error:  # the request's fault; anything else is a bug: a 500
            status = HTTPStatus.NOT_FOUND if isinstance(error, KeyError) else HTTPStatus.BAD_REQUEST  # unknown singer
            self._send(status, {"error": str(error)})
        except Exception:
            logger.exception("%s %s failed", method, self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal server error; see the server log"})
        if not self.body_read:
            self._drain_body()

    def _send(self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._respond(status, body, "application/json; charset=utf-8", headers)

    def _respond(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.sent_bytes = len(body)
        except OSError as error:  # gone away, or not reading (a timeout)
            logger.info("%s: the %d response could not be sent (%s)", self.address_string(), status, error)

    def _drain_body(self) -> None:
        """Drop a small unread body: closing a socket with unread data resets it, losing the response."""
        length_text = self.headers.get("Content-Length", "0").strip()
        remaining = min(int(length_text), DRAIN_BYTES) if length_text.isdecimal() else 0
        self.connection.settimeout(DRAIN_SECONDS)
        with contextlib.suppress(OSError):  # a timeout or a reset: the client gets what it gets
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _authorize(self) -> None:
        """Refuse (401) a request without the server's bearer token, when it has one."""
        token = self.server.token
        if token is None:
            return
        header = self.headers.get("Authorization")
        scheme, _, credentials = (header or "").strip().partition(" ")
        # Header text is the bytes sent, decoded as Latin-1: compare those bytes with the token's UTF-8.
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"), token.encode()):
            return
        if header is None:
            problem = "this server needs a token: send the header 'Authorization: Bearer <token>'"
        else:
            problem = "the Authorization header does not carry this server's bearer token"
        raise RequestError(HTTPStatus.UNAUTHORIZED, problem, {"WWW-Authenticate": "Bearer"})

    def _parameter(self, name: str) -> str:
        values = self.query.get(name)
        if not values or not values[0]:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"missing query parameter {name!r}")
        return values[0]

    def _count(self, name: str, default: int) -> int:
        """The query parameter ``name``: an integer from 1 to MAX_TOP_K, ``default`` when absent."""
        text = self.query.get(name, [str(default)])[0]
        if not text.isdecimal() or not 1 <= int(text) <= MAX_TOP_K:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer from 1 to {MAX_TOP_K}, got {text!r}")
        return int(text)

    def _known_singer(self) -> str:
        singer_id = self._parameter("singer_id")
        if singer_id not in self.server.library:
            raise RequestError(HTTPStatus.NOT_FOUND, f"singer {singer_id!r} is not enrolled")
        return singer_id

    def _content_length(self) -> int:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the audio file as the body, with a Content-Length")
        if not length_text.strip().isdecimal():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length_text!r}")
        length = int(length_text)
        if length > self.server.max_bytes:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {length} bytes exceeds the limit of {self.server.max_bytes} bytes",
            )
        if length == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send the audio file's bytes")
        return length

    def _receive_body(self, path: Path) -> None:
        """Write the body to ``path`` chunk by chunk; 408 (and a closed connection) when the client stalls."""
        length = self._content_length()
        self.body_read = True  # from here on, whatever happens, there is nothing left worth draining
        received = 0
        with path.open("wb") as file:
            while received < length:
                try:
                    chunk = self.rfile.read1(min(length - received, CHUNK_BYTES))
                except TimeoutError:
                    raise RequestError(
                        HTTPStatus.REQUEST_TIMEOUT,
                        f"the upload stalled: nothing came for {self.server.read_timeout:g} s after {received} of "
                        f"{length} bytes",
                        headers={"Connection": "close"},
                    ) from None
                except ConnectionError:  # reset by the client: an early end, not a fault of the server
                    chunk = b""
                if not chunk:
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {received} of {length} bytes")
                file.write(chunk)
                received += len(chunk)

    def _file_part(self, body: Path) -> Path:
        """Extract the audio of the multipart/form-data ``body``: the part named ``file``, else the first file."""
        # Fed bytes, not BytesParser.parse(file), which reads through universal newlines: \r\n -> \n in the audio.
        parser = BytesFeedParser(policy=email.policy.HTTP)
        parser.feed(f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode("latin-1"))
        allowed_line_breaks = 1024 + body.stat().st_size // MULTIPART_BYTES_PER_LINE_BREAK  # 1024 for its headers
        line_breaks = 0
        with body.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                line_breaks += chunk.count(b"\n") + chunk.count(b"\r")
                if line_breaks > allowed_line_breaks:
                    raise RequestError(
                        HTTPStatus.BAD_REQUEST,
                        f"multipart/form-data body with over one line break per {MULTIPART_BYTES_PER_LINE_BREAK} "
                        "bytes: too costly to parse; send the audio as the raw body (curl --data-binary @song.wav)",
                    )
                parser.feed(chunk)
        form = parser.close()
        if not form.is_multipart():
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "multipart/form-data body that does not split into parts (check the boundary)"
            )
        parts = form.get_payload()
        named = [part for part in parts if part.get_param("name", header="content-disposition") == "file"]
        files = named or [part for part in parts if part.get_filename() is not None]
        if not files:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                "multipart/form-data body without a file part: send the audio as a file field (curl -F file=@song.wav)",
            )
        content = files[0].get_payload(decode=True)
        if not content:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the file part of the multipart/form-data body is empty")
        path = body.with_name("file")
        path.write_bytes(content)
        return path

    def _uploaded_segments(self) -> np.ndarray:
        """Receive the upload; then, at most ``max_decodes`` at a time, decode it as audio and ``embed`` it: its
        (n, dim) window embeddings (an ``embed`` that gives one (dim,) embedding counts as one window)."""
        with tempfile.TemporaryDirectory(prefix="singerid-upload-") as folder:
            path = Path(folder) / "upload"
            self._receive_body(path)
            with self.server.decode_slots:
                if self.headers.get_content_type() == "multipart/form-data":
                    path = self._file_part(path)
                try:
                    wave = load_audio(path, SAMPLE_RATE)
                except AudioError as error:
                    raise RequestError(
                        HTTPStatus.BAD_REQUEST, f"could not decode the uploaded audio: {error.reason}"
                    ) from error
                segments = np.atleast_2d(np.asarray(self.server.embed(wave, SAMPLE_RATE), dtype=np.float32))
        dim = self.server.library.dim
        if segments.ndim != 2 or segments.shape[1] != dim or not len(segments):
            raise RuntimeError(f"embed() returned shape {segments.shape}, expected ({dim},) or (n, {dim})")
        return segments

    # -- endpoints -------------------------------------------------------------------------------------------

    def _web_file(self) -> WebFile:
        return web_file(self.route)

    def _health(self) -> dict[str, Any]:
        library = self.server.library
        return {"status": "ok", "singers": len(library), "dim": library.dim, "max_upload_bytes": self.server.max_bytes}

    def _identify(self) -> dict[str, Any]:
        top_k = self._count("top_k", 5)
        library = self.server.library
        matches = library.identify(self._uploaded_segments(), top_k, open_set=False)
        threshold = library.threshold
        unknown = not matches or (threshold is not None and matches[0].score < threshold)
        return {"matches": [match_json(match) for match in matches], "unknown": unknown, "threshold": threshold}

    def _verify(self) -> dict[str, Any]:
        singer_id = self._known_singer()
        if self.server.library.threshold is None:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the library has no verification threshold; calibrate one")
        verification = self.server.library.verify(singer_id, self._uploaded_segments().mean(axis=0))
        return {
            "singer_id": verification.singer_id,
            "score": verification.score,
            "accepted": verification.accepted,
            "threshold": verification.threshold,
        }

    def _similar(self) -> dict[str, Any]:
        singer_id = self._known_singer()
        return {
            "matches": [match_json(match) for match in self.server.library.similar(singer_id, self._count("top_k", 5))]
        }

    def _singers(self) -> dict[str, Any]:
        text = folded(self.query.get("q", [""])[0])
        limit = self._count("limit", 100)
        library = self.server.library
        found = sorted((singer for singer in library.singers if text in folded(singer)), key=lambda s: (folded(s), s))
        return {"singers": found[:limit], "matched": len(found), "total": len(library)}

    def _enroll(self) -> dict[str, Any]:
        singer_id = check_singer_id(self._parameter("singer_id"))
        replace = self.query.get("replace", ["0"])[0].lower() in ("1", "true", "yes")
        segments = self._uploaded_segments()
        with self.server.enroll_lock:
            self.server.library.enroll(singer_id, segments, replace=replace)
            singers = len(self.server.library)
        return {"enrolled": singer_id, "replaced": replace, "singers": singers}


_ROUTES: dict[str, dict[str, Callable[[_Handler], dict[str, Any] | WebFile]]] = {
    **{path: {"GET": _Handler._web_file} for path in WEB_FILES},
    "/health": {"GET": _Handler._health},
    "/identify": {"POST": _Handler._identify},
    "/verify": {"POST": _Handler._verify},
    "/similar": {"GET": _Handler._similar},
    "/singers": {"GET": _Handler._singers},
    "/enroll": {"POST": _Handler._enroll},
}


def folded(text: str) -> str:
    """``text`` without case or accents, as /singers searches and sorts ids: "Álvaro" -> "alvaro"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(character for character in decomposed if not unicodedata.combining(character)).casefold()


def match_json(match: Match) -> dict[str, Any]:
    """A library ``Match`` as a JSON object."""
    return {"singer_id": match.singer_id, "score": match.score}
