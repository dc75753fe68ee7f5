"""The Docker Engine API's transport: HTTP/1.1 on a unix socket, streams and hijacked connections.

One thread per connection (`socketserver.ThreadingMixIn`): attach, logs --follow, events and exec
hold their connection for as long as the client reads, and each handler calls the engine
synchronously, as the CLI does. This module knows nothing of containers: it parses requests,
negotiates the API version, bounds bodies, frames streams, and turns the engine's errors into
Docker's JSON error bodies (the only place errors become HTTP statuses). Routes live in
`isle.api.routes`.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from isle.errors import IsleError

__all__ = ["API_VERSION", "MIN_API_VERSION", "Request", "Response", "Hijack", "Stream",
           "ApiError", "serve", "mux_frame", "UnixServer"]

#: the newest API version isle speaks (Docker 25.0's) and the oldest it accepts (Docker 1.12's)
API_VERSION = "1.44"
MIN_API_VERSION = "1.24"
#: request bodies larger than this are refused (archives, build contexts and loads stream instead)
MAX_JSON_BODY = 16 << 20
_VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")


def _vtuple(v: str) -> tuple[int, int]:
    a, _, b = v.partition(".")
    return int(a), int(b or 0)


class ApiError(Exception):
    """An HTTP error with Docker's {"message": ...} body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One parsed request: method, path (version prefix removed), query, headers, body access."""

    def __init__(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.h = handler
        self.method = method
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        m = _VERSION_PREFIX.match(path)
        self.version = API_VERSION
        if m:
            self.version = m.group(1)
            path = m.group(2)
            if _vtuple(self.version) < _vtuple(MIN_API_VERSION):
                raise ApiError(400, f"client version {self.version} is too old. Minimum supported "
                                    f"API version is {MIN_API_VERSION}, please upgrade your client "
                                    "to a newer version")
            if _vtuple(self.version) > _vtuple(API_VERSION):
                raise ApiError(400, f"client version {self.version} is too new. Maximum supported "
                                    f"API version is {API_VERSION}")
        self.path = path.rstrip("/") or "/"
        self.query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self._gone = False
        self.headers = handler.headers
        self.params: dict[str, str] = {}
        self._body: bytes | None = None

    # -- query -------------------------------------------------------------------------------
    def q(self, name: str, default: str = "") -> str:
        v = self.query.get(name)
        return v[-1] if v else default

    def qlist(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def qbool(self, name: str, default: bool = False) -> bool:
        v = self.query.get(name)
        if not v:
            return default
        return v[-1].lower() in ("1", "true", "yes", "on")

    def qint(self, name: str, default: int) -> int:
        v = self.q(name)
        if v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {v!r} is not an integer") from None

    def filters(self) -> dict[str, list[str]]:
        """Docker's `filters` query parameter: {"key": ["v", ...]} or {"key": {"v": true}}."""
        raw = self.q("filters")
        if not raw:
            return {}
        try:
            f = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"invalid filter {raw!r}: not JSON") from None
        if not isinstance(f, dict):
            raise ApiError(400, f"invalid filter {raw!r}: want an object")
        out: dict[str, list[str]] = {}
        for k, v in f.items():
            if isinstance(v, dict):
                out[k] = [x for x, on in v.items() if on]
            elif isinstance(v, list):
                out[k] = [str(x) for x in v]
            else:
                raise ApiError(400, f"invalid filter {k!r}: want a list or an object")
        return out

    # -- body --------------------------------------------------------------------------------
    def body(self, limit: int = MAX_JSON_BODY) -> bytes:
        if self._body is None:
            self._body = b"".join(self.body_chunks(limit))
        return self._body

    def body_chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The request body as it arrives (Content-Length or chunked), at most `limit` bytes."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        rfile = self.h.rfile
        total = 0

        def count(n: int) -> None:
            nonlocal total
            total += n
            if limit is not None and total > limit:
                raise ApiError(413, f"request body larger than {limit} bytes")

        if "chunked" in te:
            while True:
                line = rfile.readline(1024)
                if not line:
                    raise ApiError(400, "request body ended inside a chunk")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ApiError(400, "bad chunk size in request body") from None
                if size == 0:
                    while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                count(size)
                left = size
                while left:
                    b = rfile.read(min(left, 1 << 16))
                    if not b:
                        raise ApiError(400, "request body ended early")
                    left -= len(b)
                    yield b
                rfile.readline(8)
            return
        n = self.headers.get("Content-Length")
        if not n:
            return
        try:
            left = int(n)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {n!r}") from None
        count(left)
        while left > 0:
            b = rfile.read(min(left, 1 << 16))
            if not b:
                raise ApiError(400, "request body ended early")
            left -= len(b)
            yield b

    def client_gone(self) -> bool:
        """The client closed its connection (or reset it): what a long wait (wait, events,
        logs --follow) checks between its polls, so a killed client holds no thread. Bytes
        waiting to be read (a pipelined request) mean it is still there."""
        if self._gone:
            return True
        sock = self.h.connection
        try:
            p = select.poll()
            p.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
            if p.poll(0):
                self._gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            pass
        except OSError:
            self._gone = True
        return self._gone

    def json(self, default: Any = None, *, kind: type = dict) -> Any:
        raw = self.body()
        if not raw.strip():
            if default is None:
                raise ApiError(400, "request body is empty; a JSON object is needed")
            return default
        try:
            v = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON in request body: {exc}") from None
        if v is None and default is not None:
            return default
        if not isinstance(v, kind):
            raise ApiError(400, f"request body must be a JSON {kind.__name__}, not "
                                f"{type(v).__name__}")
        return v


class Response:
    """A whole response: status, JSON (or bytes) body, headers."""

    def __init__(self, status: int = 200, body: Any = None, *, raw: bytes | None = None,
                 content_type: str = "application/json", headers: dict[str, str] | None = None
                 ) -> None:
        self.status, self.body, self.raw = status, body, raw
        self.content_type = content_type
        self.headers = headers or {}


class Stream:
    """A streamed (chunked) response: each item of `chunks` is sent as soon as it is made."""

    def __init__(self, chunks: Iterable[bytes], *, content_type: str = "application/json",
                 status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.chunks, self.content_type, self.status = chunks, content_type, status
        self.headers = headers or {}


class Hijack:
    """Take over the connection (attach, exec start): `run(sock, rfile)` owns it until it returns.

    The client asked with `Upgrade: tcp` for a 101; old clients get a 200 and the raw stream."""

    def __init__(self, run: Callable[[socket.socket, Any], None], *,
                 content_type: str = "application/vnd.docker.raw-stream",
                 before: Callable[[], None] | None = None) -> None:
        self.run, self.content_type, self.before = run, content_type, before


def mux_frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed stream framing: [stream, 0, 0, 0, size (big endian u32)] + data."""
    return struct.pack(">BxxxL", stream, len(data)) + data


Route = tuple[str, re.Pattern[str], Callable[..., Any]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "isle"
    sys_version = ""
    server: UnixServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- stdlib's name
        if self.server.verbose:
            sys.stderr.write(f"api: {format % args}\n")

    def address_string(self) -> str:
        return "unix"

    def version_string(self) -> str:  # the one Server header
        return f"isle/{self.server.isle_version} (linux)"

    def do_GET(self) -> None:  # noqa: N802 -- http.server's names
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self.server.activity()
        try:
            req = Request(self, method)
            handler, params = self.server.match(method, req.path)
            req.params = params
            result = handler(req)
        except ApiError as exc:
            self._error(exc.status, str(exc))
            return
        except IsleError as exc:
            self._error(getattr(exc, "http_status", 500), str(exc))
            return
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception as exc:  # noqa: BLE001 -- a bug must still answer, never hang
            import traceback

            traceback.print_exc(file=sys.stderr)
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")
            return
        try:
            self._send(method, result)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _common_headers(self) -> None:
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Docker-Experimental", "false")
        self.send_header("Ostype", "linux")

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"message": message}).encode() + b"\n"
        # an unread request body would be taken for the next request: close the connection
        unread = self.headers.get("Content-Length") not in (None, "0") or \
            bool(self.headers.get("Transfer-Encoding"))
        try:
            self.send_response(status)
            self._common_headers()
            if unread:
                self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        if unread:
            self.close_connection = True

    def _send(self, method: str, result: Any) -> None:
        if result is None:
            result = Response(204)
        if isinstance(result, Hijack):
            self._hijack(result)
            return
        if isinstance(result, Stream) and method == "HEAD":
            close = getattr(result.chunks, "close", None)
            if close:
                close()
            result = Response(result.status, raw=b"", content_type=result.content_type,
                              headers=result.headers)
        if isinstance(result, Stream):
            self.send_response(result.status)
            self._common_headers()
            self.send_header("Content-Type", result.content_type)
            for k, v in result.headers.items():
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            try:
                for chunk in result.chunks:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            finally:
                close = getattr(result.chunks, "close", None)
                if close:
                    close()
            return
        if not isinstance(result, Response):
            result = Response(200, result)
        if result.raw is not None:
            data = result.raw
        elif result.body is None or result.status in (204, 304):
            data = b""
        else:
            data = json.dumps(result.body).encode() + b"\n"
        self.send_response(result.status)
        self._common_headers()
        for k, v in result.headers.items():
            self.send_header(k, v)
        if result.status not in (204, 304):
            self.send_header("Content-Type", result.content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD" and result.status not in (204, 304):
            self.wfile.write(data)
        self.wfile.flush()

    def _hijack(self, h: Hijack) -> None:
        upgrade = (self.headers.get("Upgrade") or "").lower() in ("tcp", "h2c")
        if upgrade:
            self.send_response(101, "UPGRADED")
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
        else:
            self.send_response(200)
        self._common_headers()
        self.send_header("Content-Type", h.content_type)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        if h.before:
            h.before()
        try:
            h.run(self.connection, self.rfile)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    #: listen backlog: socketserver's 5 makes a burst of clients fail to connect (EAGAIN on a
    #: unix socket); the kernel caps it at net.core.somaxconn
    request_queue_size = 4096

    def __init__(self, path: str, routes: list[Route], *, verbose: bool = False,
                 idle_timeout: float = 0, isle_version: str = "") -> None:
        self.routes = routes
        self.verbose = verbose
        self.idle_timeout = idle_timeout
        self.isle_version = isle_version
        self.sock_path = path
        self._last = time.monotonic()
        self._busy = 0
        self._lock = threading.Lock()
        super().__init__(path, _Handler)

    def activity(self) -> None:
        self._last = time.monotonic()

    def match(self, method: str, path: str) -> tuple[Callable[..., Any], dict[str, str]]:
        allowed = False
        fallback = None
        for m, rx, fn in self.routes:
            mo = rx.fullmatch(path)
            if mo is None:
                continue
            if m == method:
                return fn, mo.groupdict()
            if method == "HEAD" and m == "GET" and fallback is None:
                fallback = fn, mo.groupdict()  # HEAD of a GET route unless it has its own
            allowed = True
        if fallback is not None:
            return fallback
        if allowed:
            raise ApiError(405, f"method {method} not allowed on {path}")
        raise ApiError(404, f"page not found: {method} {path}")

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._busy += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._busy -= 1
            self.activity()

    def service_actions(self) -> None:
        if self.idle_timeout and self._busy == 0 and \
                time.monotonic() - self._last > self.idle_timeout:
            threading.Thread(target=self.shutdown, daemon=True).start()


def serve(path: str, routes: list[Route], *, idle_timeout: float = 0, verbose: bool = False,
          mode: int = 0o660, group: int | None = None, isle_version: str = "",
          listen_fd: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT or `idle_timeout` seconds without a request (0: forever).

    With listen_fd (systemd socket activation) the socket is inherited, else made at path with
    `mode` and `group`, replacing a stale socket but never a live one."""
    import signal

    if listen_fd is None:
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody answers on it
            else:
                probe.close()
                raise ApiError(409, f"{path}: another service is already listening there")
            finally:
                probe.close()
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        old = os.umask(0o177)
        try:
            srv = UnixServer(path, routes, verbose=verbose, idle_timeout=idle_timeout,
                             isle_version=isle_version)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        if group is not None:
            os.chown(path, 0, group)
    else:
        srv = UnixServer.__new__(UnixServer)
        srv.routes, srv.verbose, srv.idle_timeout = routes, verbose, idle_timeout
        srv.isle_version, srv.sock_path = isle_version, ""
        srv._last, srv._busy, srv._lock = time.monotonic(), 0, threading.Lock()
        socketserver.BaseServer.__init__(srv, "", _Handler)
        srv.socket = socket.socket(fileno=listen_fd)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        srv.server_close()
        if listen_fd is None and srv.sock_path:
            try:
                os.unlink(srv.sock_path)
            except OSError:
                pass
