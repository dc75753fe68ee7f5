"""Bearer-token auth (the Docker Hub flow) against a real token server in front of the registry."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import httpx
import pytest

from isle.errors import RegistryError
from isle.image.pull import pull
from isle.image.push import push
from isle.image.registry import RegistryClient
from isle.image.store import ImageStore

pytestmark = [pytest.mark.registry, pytest.mark.root]
USER, PASSWORD = "tok", "en"


class TokenGate:
    """/token issues a token for basic credentials; /v2/* needs ``Bearer <token for scope>``."""

    def __init__(self, upstream: str) -> None:
        self.scopes: list[str] = []
        gate = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlparse(self.path)
                if url.path == "/token":
                    q = urllib.parse.parse_qs(url.query)
                    auth = self.headers.get("Authorization", "")
                    if auth != "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode():
                        self._send(401, b"{}", {})
                        return
                    scope = q.get("scope", [""])[0]
                    gate.scopes.append(scope)
                    self._send(200, json.dumps({"token": "T:" + scope}).encode(), {})
                    return
                parts = url.path.split("/")
                scope = f"repository:{'/'.join(parts[2:-2])}:pull" if len(parts) > 4 else ""
                if self.headers.get("Authorization") != f"Bearer T:{scope}":
                    realm = f"http://{gate.addr}/token"
                    self._send(
                        401,
                        b"{}",
                        {
                            "WWW-Authenticate": f'Bearer realm="{realm}",service="gate",'
                            f'scope="{scope}"'
                        },
                    )
                    return
                r = httpx.get(
                    upstream + self.path, headers={"Accept": self.headers.get("Accept", "")}
                )
                self._send(
                    r.status_code,
                    r.content,
                    {k: r.headers[k] for k in ("Content-Type",) if k in r.headers},
                )

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.addr = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_bearer_token_flow(registry, tmp_path: Path) -> None:
    src = ImageStore(str(tmp_path / "src"))
    with RegistryClient(registry.addr, tls_verify=False) as c:
        push(src, src.resolve("busybox"), f"{registry.addr}/tok/bb:1", c)
    gate = TokenGate(f"http://{registry.addr}")
    try:
        store = ImageStore(str(tmp_path / "dst"))
        with (
            RegistryClient(gate.addr, tls_verify=False) as c,
            pytest.raises(RegistryError, match="token service said HTTP 401"),
        ):
            pull(store, f"{gate.addr}/tok/bb:1", c)
        with RegistryClient(gate.addr, tls_verify=False, credentials=(USER, PASSWORD)) as c:
            img = pull(store, f"{gate.addr}/tok/bb:1", c)
        assert img.id == src.resolve("busybox").id
        assert gate.scopes == ["repository:tok/bb:pull"]  # one token, reused for every blob
    finally:
        gate.close()
