"""Headless Chromium driven over its DevTools protocol, for testing the pack in ComfyUI's real front end.

Debian's `chromium` package is the browser (nothing is downloaded). The protocol is JSON over one
websocket on 127.0.0.1; the small client here speaks it with the standard library only, so the tests
need no browser-automation package.

    with Chromium.start(server_url, profile_dir) as browser:
        browser.evaluate("1 + 1")                     # JavaScript in the page; promises are awaited
        browser.screenshot(path)                      # PNG of the viewport
        browser.page_errors                           # uncaught exceptions and console.error lines
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # nothing but the local server
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
VIEWPORT = (1600, 1000)


class BrowserError(RuntimeError):
    """Chromium could not be started, or the page answered with an exception (its message included)."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """The client side of RFC 6455, enough for the DevTools protocol: text frames, masked, any length."""

    def __init__(self, url: str, timeout: float):
        assert url.startswith("ws://"), url
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("the DevTools websocket closed during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise BrowserError(f"DevTools websocket handshake refused: {status!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self.buffer)))
            if not chunk:
                raise BrowserError("the DevTools websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])  # FIN + text
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise BrowserError("the DevTools websocket was closed by the browser")
            if opcode == 0x9:  # ping: answer it, keep reading
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class Chromium:
    process: subprocess.Popen
    socket: WebSocket
    log_path: Path
    page_errors: list[str] = field(default_factory=list)
    _next_id: int = 0

    @classmethod
    def start(cls, url: str, profile: Path, timeout: float = 120.0) -> "Chromium":
        """Opens `url` in a fresh headless Chromium whose profile and temp files live in `profile`."""
        binary = find_chromium()
        if binary is None:
            raise BrowserError("no chromium on PATH (Debian: apt-get install -y chromium)")
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "tmp").mkdir(exist_ok=True)
        log_path = profile / "chromium.log"
        width, height = VIEWPORT
        with open(log_path, "wb") as log:
            process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile / 'data'}",
                                        f"--window-size={width},{height}", "about:blank"],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=dict(os.environ, TMPDIR=str(profile / "tmp")), start_new_session=True)
        try:
            port = _devtools_port(profile / "data" / "DevToolsActivePort", process, log_path, timeout)
            browser = cls(process, WebSocket(_page_socket(port, timeout), timeout), log_path)
            browser.call("Runtime.enable")
            browser.call("Page.enable")
            browser.call("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            browser.call("Page.navigate", {"url": url})
        except BaseException:
            _stop(process)
            raise
        return browser

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, params: dict | None = None, timeout: float = 120.0) -> dict:
        """One protocol command; events that arrive meanwhile are scanned for page errors."""
        self._next_id += 1
        ident = self._next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        self.socket.sock.settimeout(timeout)
        while time.monotonic() < deadline:
            message = json.loads(self.socket.receive())
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._note_event(message)
        raise BrowserError(f"{method}: no answer within {timeout:.0f} s")

    def _note_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.page_errors.append((details.get("exception") or {}).get("description") or details.get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.page_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))

    def evaluate(self, expression: str, timeout: float = 120.0):
        """The value of a JavaScript expression in the page (awaited if it is a promise, returned as JSON)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True,
                                                "timeout": int(timeout * 1000)}, timeout + 10)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError((details.get("exception") or {}).get("description") or details.get("text", "error"))
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.socket.close()
        _stop(self.process)


def _devtools_port(port_file: Path, process: subprocess.Popen, log_path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
        if port_file.is_file() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        time.sleep(0.2)
    raise BrowserError(f"chromium opened no DevTools port within {timeout:.0f} s")


def _page_socket(port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [p for p in json.load(response) if p.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise BrowserError("chromium showed no page to attach to")


def _stop(process: subprocess.Popen) -> None:
    """Ends the browser this module started: its own process group (renderers, GPU and zygote helpers)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
