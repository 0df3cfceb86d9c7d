"""Stand-ins for the hosts models are downloaded from, on 127.0.0.1 only (tests never leave the machine).

`ModelHost` serves files by path over plain HTTP: whole, with byte ranges, cut off mid-way, or a web
page instead. `DriveTunnel` is an HTTPS proxy that answers for drive.google.com and
drive.usercontent.google.com itself, with a certificate from a test CA, so gdown's real Google Drive
path (confirmation page, quota page) runs against `ModelHost` instead of Google.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com")


@dataclass
class Served:
    body: bytes
    content_type: str = "application/octet-stream"
    cut_at: int | None = None  # the next whole-file answer stops after this many bytes, then the connection drops
    headers: tuple = ()
    ranges: bool = True  # False: a server without byte ranges, which answers every request with the whole file
    stall_after: int | None = None  # send this many bytes, then nothing until the client gives up


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        host: ModelHost = self.server.model_host
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        host.requests.append({"host": self.headers.get("Host", ""), "path": parts.path, "query": query,
                              "range": self.headers.get("Range")})
        served = host.resolve(parts.path, query)
        if served is None:
            self._answer(404, b"not found", "text/plain")
            return
        self._send_file(served)

    def _stall(self, served: Served, extra: tuple) -> None:
        """Headers and the first bytes, then silence while the client waits (at most 30 s)."""
        self.send_response(200)
        self.send_header("Content-Type", served.content_type)
        self.send_header("Content-Length", str(len(served.body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(served.body[:served.stall_after])
        self.wfile.flush()
        self.server.model_host.released.wait(30)
        self.close_connection = True

    def _answer(self, status: int, body: bytes, content_type: str, extra: tuple = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, served: Served) -> None:
        body, requested = served.body, self.headers.get("Range")
        extra = ((("Accept-Ranges", "bytes"),) if served.ranges else ()) + tuple(served.headers)
        if served.stall_after is not None:
            self._stall(served, extra)
            return
        if requested and served.ranges:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            self._answer(206, body[start:], served.content_type,
                         extra + (("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"),))
            return
        if served.cut_at is None:
            self._answer(200, body, served.content_type, extra)
            return
        self.send_response(200)
        self.send_header("Content-Type", served.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body[:served.cut_at])
        self.wfile.flush()
        served.cut_at = None  # only once
        self.close_connection = True


class ModelHost:
    """A threaded HTTP server on 127.0.0.1 serving registered files and pages by path."""

    def __init__(self):
        self.files: dict[str, Served] = {}
        self.drive: dict[str, Served | str] = {}  # Drive file id -> file, or "quota"
        self.requests: list[dict] = []
        self.released = threading.Event()  # ends every stalled answer (set on close)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.model_host = self
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def resolve(self, path: str, query: dict) -> Served | None:
        if path in ("/uc", "/download") and query.get("id") in self.drive:
            return self._drive_answer(path, query)
        return self.files.get(path)

    def _drive_answer(self, path: str, query: dict) -> Served:
        """Drive's answers: a confirmation page for large files (a form that leads to the file on
        drive.usercontent.google.com), or an error page when the file's download quota is used up."""
        file_id, file = query["id"], self.drive[query["id"]]
        if file == "quota":
            return Served(b'<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>'
                          b'<p class="uc-error-caption">Sorry, you can\'t view or download this file at this time.</p>'
                          b'<p class="uc-error-subcaption">Too many users have viewed or downloaded this file '
                          b'recently. Please try accessing the file again later.</p></body></html>',
                          "text/html; charset=utf-8")
        if path == "/uc":
            form = (f'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                    f'<p>Google Drive can\'t scan this file for viruses.</p><form id="download-form" '
                    f'action="https://drive.usercontent.google.com/download" method="get">'
                    f'<input type="submit" id="uc-download-link" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" '
                    f'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
                    f'name="uuid" value="0b8c7e7a"></form></body></html>')
            return Served(form.encode(), "text/html; charset=utf-8")
        return Served(file.body, headers=(("Content-Disposition", 'attachment; filename="checkpoint.pth"'),))

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class _Tunnel(socketserver.BaseRequestHandler):
    """Answers `CONNECT host:443`, then speaks TLS as that host and serves it from the ModelHost."""

    def handle(self) -> None:
        reader = self.request.makefile("rb")
        request_line = reader.readline().decode("latin-1").split()
        while reader.readline() not in (b"\r\n", b"\n", b""):
            pass
        reader.close()
        target = request_line[1].rsplit(":", 1)[0] if len(request_line) > 1 else ""
        self.server.connects.append(target)
        if request_line[:1] != ["CONNECT"] or target not in DRIVE_HOSTS:
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self.server.tls.wrap_socket(self.request, server_side=True) as tls:
            _Handler(tls, self.client_address, self.server.model_host.server)


class DriveTunnel:
    """An HTTPS proxy on 127.0.0.1 that plays Google Drive; trusted through a test CA file."""

    def __init__(self, model_host: ModelHost, ca_file):
        import trustme

        authority = trustme.CA()
        authority.cert_pem.write_to_path(str(ca_file))
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(*DRIVE_HOSTS).configure_cert(tls)
        self.ca_file = str(ca_file)
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Tunnel)
        self.server.daemon_threads = True
        self.server.tls, self.server.model_host, self.server.connects = tls, model_host, []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def connects(self) -> list[str]:
        return self.server.connects

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
