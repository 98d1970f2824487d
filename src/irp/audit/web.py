"""The annotation page: a small standard-library HTTP server over an audit folder.

    GET  /                         the page (one self-contained HTML file: inline CSS and JS, no external asset)
    GET  /api/state?annotator=A    A's queue: total, answered, queue_size, position, the next record, A's last verdict
    POST /api/verdict              {"annotator", "id", "verdict": yes|no|cant_tell} -> the new state
    POST /api/undo                 {"annotator"} -> removes A's last verdict, returns the new state

Bad input is a 4xx whose JSON names the field ({"error", "field"}); a verdict is on disk (atomically, see
`irp.audit.store`) before the answer comes back, so a closed tab or a killed server loses nothing answered.
It listens on loopback by default and then only answers requests whose Host is a loopback name (a web
page elsewhere cannot reach it through DNS rebinding). Bound to any other address it requires a token:
`?token=` in the page's URL, sent by the page as the X-Audit-Token header on every call.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from irp.audit.store import AuditError, AuditFolder, check_annotator

MAX_BODY = 64 * 1024
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    """Whether a host name or address is loopback.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def page_html(default_annotator: str | None) -> bytes:
    """The page with the server's default annotator filled in (JSON-encoded, so any name is safe in the script)."""
    text = resources.files("irp.audit").joinpath("page.html").read_text(encoding="utf-8")
    default = json.dumps(default_annotator or "").replace("<", "\\u003c")
    return text.replace("DEFAULT_ANNOTATOR", default).encode("utf-8")


class AuditServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: AuditFolder, host: str, port: int, annotator: str | None, token: str | None,
                 overlap: float | None = None) -> None:
        if annotator is not None:
            check_annotator(annotator)
        loopback = is_loopback(host)
        if not loopback and not token:
            raise AuditError("--token", f"binding {host} (not loopback) needs a token: pass --token or let "
                                        "`irp audit serve` generate one")
        if overlap is not None and not 0.0 <= overlap <= 1.0:
            raise AuditError("--overlap", f"--overlap must be in [0, 1], got {overlap}")
        self.folder, self.annotator, self.token, self.loopback = folder, annotator, token, loopback
        self.overlap = overlap
        self.page = page_html(annotator)
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: AuditServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  quiet by default
        pass

    # ---- plumbing ---------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                         "connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _error(self, status: int, field: str, message: str) -> None:
        self._json(status, {"error": message, "field": field})

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        """Host check on loopback, token check when one is set; answers the 4xx itself when not allowed."""
        header = self.headers.get("Host") or ""
        host = header.split("]")[0] + "]" if header.startswith("[") else header.rsplit(":", 1)[0]
        if self.server.loopback and not is_loopback(host):
            self._error(HTTPStatus.FORBIDDEN, "Host", f"this server answers loopback hosts only, not {host!r}")
            return False
        if self.server.token:
            given = self.headers.get("X-Audit-Token") or (query.get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), self.server.token.encode()):
                self._error(HTTPStatus.UNAUTHORIZED, "token", "missing or wrong token (X-Audit-Token or ?token=)")
                return False
        return True

    def _body(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body", f"body must be 0..{MAX_BODY} bytes")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "body", "body must be a JSON object")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "body", "body must be a JSON object")
            return None
        return body

    # ---- routes -----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            if self._allowed(query):
                self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif url.path == "/api/state":
            if self._allowed(query):
                self._state((query.get("annotator") or [self.server.annotator or ""])[0])
        elif url.path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._error(HTTPStatus.NOT_FOUND, "path", f"no such page: {url.path}")

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path not in ("/api/verdict", "/api/undo"):
            self._error(HTTPStatus.NOT_FOUND, "path", f"no such endpoint: {url.path}")
            return
        if not self._allowed(parse_qs(url.query)):
            return
        body = self._body()
        if body is None:
            return
        folder = self.server.folder
        try:
            annotator = check_annotator(body.get("annotator"))
            if url.path == "/api/verdict":
                folder.record_verdict(annotator, body.get("id"), body.get("verdict"))
            else:
                folder.undo(annotator)
            state = folder.progress(annotator, self.server.overlap)
        except AuditError as e:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, e.field, str(e))
            return
        self._json(HTTPStatus.OK, state)

    def _state(self, annotator: str) -> None:
        try:
            check_annotator(annotator)
            state = self.server.folder.progress(annotator, self.server.overlap)
        except AuditError as e:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, e.field, str(e))
            return
        self._json(HTTPStatus.OK, state)


def make_server(
    folder: AuditFolder, host: str = "127.0.0.1", port: int = 8765, annotator: str | None = None,
    token: str | None = None, overlap: float | None = None,
) -> AuditServer:
    """A ready server (not yet serving); port 0 picks a free one (`server.server_address`); `overlap`: see
    `AuditFolder.progress`."""
    return AuditServer(folder, host, port, annotator, token, overlap)


def new_token() -> str:
    return secrets.token_urlsafe(18)


def serve_in_thread(server: AuditServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread
