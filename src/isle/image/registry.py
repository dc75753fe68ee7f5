"""OCI distribution client over httpx: manifests, blobs, uploads, blob mounts, token/basic auth.

Transient failures (connection errors, 429, 5xx) are retried with backoff. With
``tls_verify=False`` the client tries HTTPS without verification, then plain HTTP
(Docker's rule for insecure registries).
"""

from __future__ import annotations

import hashlib
import re
import ssl
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

# httpx's __init__ imports its command-line tool when it can (rich, pygments, click: ~100 ms of
# every pull); an empty stand-in makes that import fail, and httpx then skips it
sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))
import httpx  # noqa: E402

from isle.errors import RegistryError  # noqa: E402
from isle.oci.image_spec import INDEX_TYPES, MANIFEST_TYPES  # noqa: E402

__all__ = ["RegistryClient", "ACCEPT_MANIFESTS", "httpx"]

ACCEPT_MANIFESTS = ", ".join([*MANIFEST_TYPES, *INDEX_TYPES])
RETRY_STATUS = {429, 500, 502, 503, 504}


def _host_url(registry: str) -> str:
    return "registry-1.docker.io" if registry == "docker.io" else registry


class RegistryClient:
    def __init__(
        self,
        registry: str,
        *,
        credentials: tuple[str, str] | None = None,
        tls_verify: bool = True,
        ca_file: str | None = None,
        retries: int = 3,
        timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        self.host = _host_url(registry)
        self.credentials = credentials
        self.retries = retries
        self.tls_verify = tls_verify
        # one TLS context (loading CAs costs ~45 ms), shared by the clients of forked workers
        self._ssl = (
            ssl.create_default_context(cafile=ca_file)
            if ca_file
            else httpx.create_ssl_context(verify=tls_verify)
        )
        self._timeout = timeout
        self.http = self._new_http()
        self._inherited: httpx.Client | None = None
        self.scheme = "https"
        self._scheme_known = tls_verify
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()

    def _new_http(self) -> httpx.Client:
        return httpx.Client(
            verify=self._ssl,
            timeout=httpx.Timeout(self._timeout, connect=10.0),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=16),
        )

    def after_fork(self) -> None:
        """In a forked child: own connections from now on (tokens and scheme are kept).

        The parent's pooled sockets are left untouched, not closed: closing a TLS connection
        would write to a socket the parent still uses.
        """
        self._inherited = self.http
        self._lock = threading.Lock()
        self.http = self._new_http()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.scheme}://{self.host}{path}"

    def _auth_headers(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if self._basic and self.credentials:
            return {"Authorization": _basic(self.credentials)}
        return {}

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        **kw: Any,
    ) -> httpx.Response:
        """One call with auth, retries, scheme fallback; RegistryError unless status in ok."""
        last: Exception | None = None
        base_headers = dict(kw.pop("headers", {}))
        failures = 0
        authed = False
        while failures <= self.retries:
            headers = {**base_headers, **self._auth_headers(scope)}
            try:
                req = self.http.build_request(method, self.url(path), headers=headers, **kw)
                resp = self.http.send(req, stream=stream)
            except httpx.TransportError as e:
                last = e
                if (
                    isinstance(e, httpx.ConnectError)
                    and not self._scheme_known
                    and self.scheme == "https"
                ):
                    self.scheme = "http"  # insecure registry: fall back to plain HTTP
                    continue
                if "content" in kw and not isinstance(kw["content"], bytes | str):
                    break  # a streamed body cannot be sent again
                failures += 1
                time.sleep(min(0.2 * 2**failures, 3))
                continue
            self._scheme_known = True
            if resp.status_code == 401 and not authed:
                authed = True
                resp.close()
                self._authenticate(resp, scope)
                continue
            if resp.status_code == 401:
                resp.close()
                raise RegistryError(
                    f"{self.registry}: authentication required"
                    + (" (credentials rejected)" if self.credentials else "")
                )
            if resp.status_code in RETRY_STATUS and failures < self.retries:
                resp.close()
                last = RegistryError(f"{self.registry}: {method} {path}: HTTP {resp.status_code}")
                failures += 1
                time.sleep(min(0.2 * 2**failures, 3))
                continue
            if resp.status_code not in ok:
                if stream:
                    resp.read()
                raise RegistryError(
                    f"{self.registry}: {method} {path}: HTTP {resp.status_code}{_errors(resp)}"
                )
            return resp
        raise RegistryError(f"{self.registry}: {method} {path}: {last}") from last

    def _authenticate(self, resp: httpx.Response, scope: str) -> bool:
        """Answer a 401 challenge; False if we have nothing new to offer."""
        chal = resp.headers.get("www-authenticate", "")
        kind, _, rest = chal.partition(" ")
        if kind.lower() == "basic":
            if not self.credentials:
                raise RegistryError(f"{self.registry}: authentication required")
            self._basic = True
            return True
        if kind.lower() != "bearer":
            raise RegistryError(f"{self.registry}: unsupported auth challenge {chal!r}")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(f"{self.registry}: bearer challenge without realm")
        q = {"service": params.get("service", "")}
        if scope:
            q["scope"] = scope
        headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        try:
            tr = self.http.get(realm, params=q, headers=headers)
        except httpx.TransportError as e:
            raise RegistryError(f"{self.registry}: token service {realm}: {e}") from e
        if tr.status_code != 200:
            raise RegistryError(f"{self.registry}: token service said HTTP {tr.status_code}")
        body = tr.json()
        tok = body.get("token") or body.get("access_token")
        if not tok:
            raise RegistryError(f"{self.registry}: token service returned no token")
        self._tokens[scope] = tok
        return True

    # -- API ---------------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/ (and log in, if the registry asks)."""
        self.request("GET", "/v2/", scope="")

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, verified when ref is a digest."""
        r = self.request(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        body = r.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"manifest {ref}: digest mismatch (got {digest})")
        mt = r.headers.get("content-type", "").split(";")[0].strip()
        return body, mt, digest

    def blob_stream(self, repo: str, digest: str) -> httpx.Response:
        """A streaming response for a blob; the caller iterates and closes it."""
        return self.request(
            "GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", stream=True
        )

    def get_blob(self, repo: str, digest: str) -> bytes:
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        if "sha256:" + hashlib.sha256(r.content).hexdigest() != digest:
            raise RegistryError(f"blob {digest}: digest mismatch")
        return r.content

    def has_blob(self, repo: str, digest: str) -> bool:
        r = self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scope=f"repository:{repo}:pull,push",
            ok=(200, 404),
        )
        return r.status_code == 200

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository blob mount; True if the registry mounted it."""
        scope = f"repository:{repo}:pull,push"
        r = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            scope=scope,
            ok=(201, 202),
            params={"mount": digest, "from": from_repo},
        )
        if r.status_code == 202:  # not mounted: cancel the upload it started
            loc = r.headers.get("location")
            if loc:
                try:
                    self.request("DELETE", loc, scope=scope, ok=(200, 202, 204, 404, 405))
                except RegistryError:
                    pass
            return False
        return True

    def upload_blob(
        self, repo: str, digest: str, size: int, chunks: Iterator[bytes] | bytes
    ) -> None:
        scope = f"repository:{repo}:pull,push"
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        loc = r.headers.get("location")
        if not loc:
            raise RegistryError(f"{self.registry}: upload for {digest}: no Location header")
        if loc.startswith("/"):
            loc = self.url(loc)
        loc += ("&" if "?" in loc else "?") + f"digest={digest}"
        self.request(
            "PUT",
            loc,
            scope=scope,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=chunks,
        )

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            scope=f"repository:{repo}:pull,push",
            ok=(201, 200),
            headers={"Content-Type": media_type},
            content=body,
        )
        return "sha256:" + hashlib.sha256(body).hexdigest()


def _basic(creds: tuple[str, str] | None) -> str:
    import base64

    assert creds
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


def _errors(resp: httpx.Response) -> str:
    try:
        errs = resp.json().get("errors") or []
        return (
            ": " + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs) if errs else ""
        )
    except ValueError:
        return ""
