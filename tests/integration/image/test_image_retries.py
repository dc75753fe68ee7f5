"""Transient registry failures (503, dropped connections) are retried; persistent ones are not."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from isle.errors import RegistryError
from isle.image.pull import pull
from isle.image.push import push
from isle.image.registry import RegistryClient
from isle.image.store import ImageStore

pytestmark = [pytest.mark.registry, pytest.mark.root]


class FlakyProxy:
    """A real HTTP server in front of the registry that fails the first N tries of each path."""

    def __init__(self, upstream: str, failures: int, mode: str) -> None:
        self.seen: dict[str, int] = {}
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                n = proxy.seen.get(path, 0)
                proxy.seen[path] = n + 1
                if n < failures and mode == "cut" and "/blobs/" in path:
                    r = httpx.get(upstream + self.path)  # headers for it all, then half
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(r.content)))
                    self.end_headers()
                    self.wfile.write(r.content[: len(r.content) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if n < failures and mode != "cut":
                    if mode == "503":
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:  # drop the connection without an answer
                        self.close_connection = True
                        self.connection.shutdown(2)
                    return
                r = httpx.get(
                    upstream + self.path,
                    headers={k: v for k, v in self.headers.items() if k.lower() in ("accept",)},
                )
                self.send_response(r.status_code)
                for k in ("Content-Type", "Docker-Content-Digest"):
                    if k in r.headers:
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.addr = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def pushed(registry, tmp_path: Path) -> Iterator[str]:
    store = ImageStore(str(tmp_path / "src"))
    with RegistryClient(registry.addr, tls_verify=False) as c:
        push(store, store.resolve("busybox"), f"{registry.addr}/retry/bb:1", c)
    yield "retry/bb:1"


@pytest.mark.parametrize("mode", ["503", "drop", "cut"])
def test_transient_failures_are_retried(registry, pushed: str, tmp_path: Path, mode: str) -> None:
    proxy = FlakyProxy(f"http://{registry.addr}", failures=2, mode=mode)
    try:
        store = ImageStore(str(tmp_path / "dst"))
        with RegistryClient(proxy.addr, tls_verify=False, retries=3) as c:
            img = pull(store, f"{proxy.addr}/{pushed}", c)
        assert (Path(img.layer_dirs[0]) / "bin" / "busybox").exists()
        assert all(n == 3 for p, n in proxy.seen.items() if "/blobs/" in p)
    finally:
        proxy.close()


def test_persistent_failure_gives_a_clear_error(registry, pushed: str, tmp_path: Path) -> None:
    proxy = FlakyProxy(f"http://{registry.addr}", failures=100, mode="503")
    try:
        store = ImageStore(str(tmp_path / "dst"))
        with (
            RegistryClient(proxy.addr, tls_verify=False, retries=2) as c,
            pytest.raises(RegistryError, match="HTTP 503"),
        ):
            pull(store, f"{proxy.addr}/{pushed}", c)
        assert store.list() == []
    finally:
        proxy.close()
