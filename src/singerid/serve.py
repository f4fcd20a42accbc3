"""An HTTP service over a singer library, on the Python standard library alone (no web framework).

Endpoints (every response is JSON; errors are ``{"error": "..."}`` and never a traceback):

=============================  ===========================================================================
``GET  /health``               ``{"status": "ok", "singers": n, "dim": d}``
``POST /identify?top_k=5``     body: an audio file (any format FFmpeg reads) ->
                               ``{"matches": [{"singer_id", "score"}, ...], "unknown": bool}``; ``unknown``
                               when the best score is below the library's threshold (the closest candidates
                               are still listed) or the library is empty
``POST /verify?singer_id=X``   body: audio -> ``{"singer_id", "score", "accepted", "threshold"}``
``GET  /similar?singer_id=X``  ``&top_k=5`` -> ``{"matches": [...]}``
``POST /enroll?singer_id=X``   body: audio -> ``{"enrolled": X, "singers": n}``; enrolls (or re-enrolls) the
                               singer from the clip's embedding (``singerid serve`` saves the library when
                               it stops, on Ctrl-C or SIGTERM).
=============================  ===========================================================================

Status codes: 400 bad audio, parameters or body; 404 unknown singer or path; 405 wrong method; 411 no
Content-Length; 413 body over ``max_bytes``; 500 anything unexpected (logged with its traceback on the server).
Uploads are written to a temporary file and decoded by ``singerid.audio.load_audio`` at 16 kHz; the caller's
``embed(wave, sample_rate)`` turns the wave into one embedding. Bind to loopback unless a proxy guards the port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from singerid.audio import AudioError, load_audio
from singerid.errors import SingerIdError

if TYPE_CHECKING:
    from singerid.library import Match, SingerLibrary

SAMPLE_RATE = 16000
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_TOP_K = 1000
# After refusing an upload, read and drop up to this much of it, so the client sees the answer, not a reset.
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 2.0

logger = logging.getLogger(__name__)

Embed = Callable[[np.ndarray, int], np.ndarray]


class ServeError(SingerIdError):
    """The service cannot start (e.g. its port is taken); the message says why."""


class RequestError(Exception):
    """A request the service refuses: the HTTP status and the message sent back as ``{"error": ...}``."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class SingerServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the library, the embedding function and the upload limit."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], library: SingerLibrary, embed: Embed, max_bytes: int) -> None:
        super().__init__(address, _Handler)
        self.library = library
        self.embed = embed
        self.max_bytes = max_bytes
        # Enrolment and the singer count it reports happen together (the library also locks its own state).
        self.enroll_lock = threading.Lock()


def make_server(
    library: SingerLibrary,
    embed: Embed,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> SingerServer:
    """A server bound to ``host:port`` (port 0 picks a free one: see ``server_address``); call serve_forever()."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return SingerServer((host, port), library, embed, max_bytes)


class _Handler(BaseHTTPRequestHandler):
    server: SingerServer
    server_version = "singerid"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body_read = False
        routes = _ROUTES.get(url.path)
        try:
            if routes is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            if method not in routes:
                allowed = ", ".join(routes)
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} takes {allowed}", headers={"Allow": allowed}
                )
            self._send(HTTPStatus.OK, routes[method](self))
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
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            logger.info("%s went away before the response was sent", self.address_string())

    def _drain_body(self) -> None:
        """Drop a small unread body: closing a socket with unread data resets it, losing the response."""
        length_text = self.headers.get("Content-Length", "0").strip()
        remaining = min(int(length_text), DRAIN_BYTES) if length_text.isdigit() else 0
        self.connection.settimeout(DRAIN_SECONDS)
        with contextlib.suppress(OSError):  # a timeout or a reset: the client gets what it gets
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _parameter(self, name: str) -> str:
        values = self.query.get(name)
        if not values or not values[0]:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"missing query parameter {name!r}")
        return values[0]

    def _top_k(self) -> int:
        text = self.query.get("top_k", ["5"])[0]
        if not text.isdigit() or not 1 <= int(text) <= MAX_TOP_K:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"top_k must be an integer from 1 to {MAX_TOP_K}, got {text!r}")
        return int(text)

    def _known_singer(self) -> str:
        singer_id = self._parameter("singer_id")
        if singer_id not in self.server.library:
            raise RequestError(HTTPStatus.NOT_FOUND, f"singer {singer_id!r} is not enrolled")
        return singer_id

    def _body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the audio file as the body, with a Content-Length")
        if not length_text.strip().isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length_text!r}")
        length = int(length_text)
        if length > self.server.max_bytes:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {length} bytes exceeds the limit of {self.server.max_bytes} bytes",
            )
        if length == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send the audio file's bytes")
        body = self.rfile.read(length)
        self.body_read = True
        if len(body) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes")
        return body

    def _uploaded_embedding(self) -> np.ndarray:
        """Decode the body as audio and embed it with the caller's ``embed``."""
        body = self._body()
        with tempfile.TemporaryDirectory(prefix="singerid-upload-") as folder:
            path = Path(folder) / "upload"
            path.write_bytes(body)
            try:
                wave = load_audio(path, SAMPLE_RATE)
            except AudioError as error:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"could not decode the uploaded audio: {error.reason}"
                ) from error
        embedding = np.asarray(self.server.embed(wave, SAMPLE_RATE), dtype=np.float32)
        if embedding.shape != (self.server.library.dim,):
            raise RuntimeError(f"embed() returned shape {embedding.shape}, expected ({self.server.library.dim},)")
        return embedding

    # -- endpoints -------------------------------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        library = self.server.library
        return {"status": "ok", "singers": len(library), "dim": library.dim}

    def _identify(self) -> dict[str, Any]:
        top_k = self._top_k()
        library = self.server.library
        matches = library.identify(self._uploaded_embedding(), top_k, open_set=False)
        threshold = library.threshold
        unknown = not matches or (threshold is not None and matches[0].score < threshold)
        return {"matches": [match_json(match) for match in matches], "unknown": unknown}

    def _verify(self) -> dict[str, Any]:
        singer_id = self._known_singer()
        if self.server.library.threshold is None:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the library has no verification threshold; calibrate one")
        verification = self.server.library.verify(singer_id, self._uploaded_embedding())
        return {
            "singer_id": verification.singer_id,
            "score": verification.score,
            "accepted": verification.accepted,
            "threshold": verification.threshold,
        }

    def _similar(self) -> dict[str, Any]:
        singer_id = self._known_singer()
        return {"matches": [match_json(match) for match in self.server.library.similar(singer_id, self._top_k())]}

    def _enroll(self) -> dict[str, Any]:
        singer_id = self._parameter("singer_id")
        embedding = self._uploaded_embedding()
        with self.server.enroll_lock:
            self.server.library.enroll(singer_id, embedding)
            singers = len(self.server.library)
        return {"enrolled": singer_id, "singers": singers}


_ROUTES: dict[str, dict[str, Callable[[_Handler], dict[str, Any]]]] = {
    "/health": {"GET": _Handler._health},
    "/identify": {"POST": _Handler._identify},
    "/verify": {"POST": _Handler._verify},
    "/similar": {"GET": _Handler._similar},
    "/enroll": {"POST": _Handler._enroll},
}


def match_json(match: Match) -> dict[str, Any]:
    """A library ``Match`` as a JSON object."""
    return {"singer_id": match.singer_id, "score": match.score}
