"""Docker Engine API handlers: each parses Docker's request shape, calls the engine, and returns
Docker's response shape. No handler touches the host itself; errors stay the engine's exceptions
(`isle.api.server` turns them into statuses).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from isle.api import convert
from isle.api.server import (
    API_VERSION,
    MIN_API_VERSION,
    ApiError,
    Hijack,
    Request,
    Response,
    Route,
    Stream,
    mux_frame,
)
from isle.errors import IsleError, NotFound

__all__ = ["Api"]

_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>.+?)"


class Api:
    """The handlers over one isle root; an engine per thread (SQLite connections are per thread)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._local = threading.local()
        self.execs: dict[str, dict[str, Any]] = {}
        self._execs_lock = threading.Lock()
        #: attach requests waiting for their container's start: {id: [queue, ...]}; the start
        #: connects conmon's attach socket before the process runs and hands it to the first
        self._attachers: dict[str, list[Any]] = {}
        self._attach_lock = threading.Lock()
        from importlib.metadata import version

        try:
            self.version = version("isle")
        except Exception:  # noqa: BLE001 -- not installed as a distribution (a checkout)
            self.version = "0.0.0"

    # -- collaborators -------------------------------------------------------------------------
    def _per_thread(self, name: str, make: Callable[[], Any]) -> Any:
        """This request thread's own `name` (sqlite connections are per thread), made once."""
        v = getattr(self._local, name, None)
        if v is None:
            v = make()
            setattr(self._local, name, v)
        return v

    def _new_engine(self) -> Any:
        from isle.engine.engine import Engine

        e = Engine(self.settings)
        e.warn = lambda msg: None
        return e

    @property
    def engine(self) -> Any:
        return self._per_thread("engine", self._new_engine)

    @property
    def images(self) -> Any:
        from isle.engine.images import Images

        return self._per_thread("images", lambda: Images(self.settings, store=self.engine.store))

    @property
    def networks(self) -> Any:
        from isle.engine.networks import Networks

        return self._per_thread("networks", lambda: Networks(self.settings))

    def routes(self) -> list[Route]:
        t: list[tuple[str, str, Callable[[Request], Any]]] = [
            ("GET", r"/_ping", self.ping),
            ("GET", r"/version", self.version_),
            ("GET", r"/info", self.info),
            ("GET", r"/events", self.events),
            ("GET", r"/system/df", self.system_df),
            ("POST", r"/auth", self.auth),
            # containers
            ("GET", r"/containers/json", self.containers_list),
            ("POST", r"/containers/create", self.container_create),
            ("POST", r"/containers/prune", self.containers_prune),
            ("GET", rf"/containers/{_ID}/json", self.container_inspect),
            ("POST", rf"/containers/{_ID}/start", self.container_start),
            ("POST", rf"/containers/{_ID}/stop", self.container_stop),
            ("POST", rf"/containers/{_ID}/restart", self.container_restart),
            ("POST", rf"/containers/{_ID}/kill", self.container_kill),
            ("POST", rf"/containers/{_ID}/pause", self.container_pause),
            ("POST", rf"/containers/{_ID}/unpause", self.container_unpause),
            ("POST", rf"/containers/{_ID}/wait", self.container_wait),
            ("DELETE", rf"/containers/{_ID}", self.container_delete),
            ("GET", rf"/containers/{_ID}/logs", self.container_logs),
            ("POST", rf"/containers/{_ID}/attach", self.container_attach),
            ("POST", rf"/containers/{_ID}/resize", self.container_resize),
            ("GET", rf"/containers/{_ID}/top", self.container_top),
            ("GET", rf"/containers/{_ID}/stats", self.container_stats),
            ("POST", rf"/containers/{_ID}/rename", self.container_rename),
            ("POST", rf"/containers/{_ID}/update", self.container_update),
            ("GET", rf"/containers/{_ID}/changes", self.container_changes),
            ("GET", rf"/containers/{_ID}/export", self.container_export),
            ("GET", rf"/containers/{_ID}/archive", self.archive_get),
            ("HEAD", rf"/containers/{_ID}/archive", self.archive_head),
            ("PUT", rf"/containers/{_ID}/archive", self.archive_put),
            ("POST", rf"/containers/{_ID}/exec", self.exec_create),
            ("POST", r"/commit", self.commit),
            ("POST", r"/build", self.build),
            ("POST", r"/build/prune", self.build_prune),
            # exec
            ("POST", rf"/exec/{_ID}/start", self.exec_start),
            ("POST", rf"/exec/{_ID}/resize", self.exec_resize),
            ("GET", rf"/exec/{_ID}/json", self.exec_inspect),
            # images
            ("GET", r"/images/json", self.images_list),
            ("POST", r"/images/create", self.image_create),
            ("POST", r"/images/prune", self.images_prune),
            ("GET", r"/images/search", self.images_search),
            ("GET", r"/images/get", self.images_get),
            ("POST", r"/images/load", self.images_load),
            ("GET", rf"/images/{_NAME}/json", self.image_inspect),
            ("GET", rf"/images/{_NAME}/history", self.image_history),
            ("GET", rf"/images/{_NAME}/get", self.image_get),
            ("POST", rf"/images/{_NAME}/tag", self.image_tag),
            ("POST", rf"/images/{_NAME}/push", self.image_push),
            ("DELETE", rf"/images/{_NAME}", self.image_delete),
            # networks
            ("GET", r"/networks", self.networks_list),
            ("POST", r"/networks/create", self.network_create),
            ("POST", r"/networks/prune", self.networks_prune),
            ("GET", rf"/networks/{_ID}", self.network_inspect),
            ("DELETE", rf"/networks/{_ID}", self.network_delete),
            ("POST", rf"/networks/{_ID}/connect", self.network_connect),
            ("POST", rf"/networks/{_ID}/disconnect", self.network_disconnect),
            # volumes
            ("GET", r"/volumes", self.volumes_list),
            ("POST", r"/volumes/create", self.volume_create),
            ("POST", r"/volumes/prune", self.volumes_prune),
            ("GET", rf"/volumes/{_NAME}", self.volume_inspect),
            ("DELETE", rf"/volumes/{_NAME}", self.volume_delete),
        ]
        return [(m, re.compile(p), _docker_not_found(p, fn)) for m, p, fn in t]

    # -- system --------------------------------------------------------------------------------
    def ping(self, req: Request) -> Response:
        return Response(200, raw=b"OK", content_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-cache, no-store, must-revalidate",
                                 "Pragma": "no-cache", "Builder-Version": "1"})

    def version_(self, req: Request) -> dict[str, Any]:
        u = os.uname()
        arch = convert.go_arch()
        return {
            "Platform": {"Name": "isle"},
            "Components": [{"Name": "Engine", "Version": self.version, "Details": {
                "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
                "Arch": arch, "KernelVersion": u.release, "Experimental": "false"}}]
            + self._driven(),
            "Version": self.version, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "", "GoVersion": f"python{platform.python_version()}", "Os": "linux",
            "Arch": arch, "KernelVersion": u.release, "BuildTime": "",
        }

    def _driven(self) -> list[dict[str, Any]]:
        """The programs isle drives and their versions (docker version lists them), asked once."""
        got = getattr(self, "_driven_cache", None)
        if got is None:
            from isle.engine.versions import components

            got = [{"Name": c["Name"], "Version": c["Version"],
                    "Details": {k: str(v) for k, v in c["Details"].items()}}
                   for c in components()[1:]]
            self._driven_cache = got
        return list(got)

    def info(self, req: Request) -> dict[str, Any]:
        i = self.engine.info()
        return convert.info(i, self.version, self.settings)

    def events(self, req: Request) -> Stream:
        since = convert.parse_time(req.q("since")) if req.q("since") else time.time()
        until = convert.parse_time(req.q("until")) if req.q("until") else 0.0
        flt = [f"{k}={v}" for k, vs in req.filters().items() for v in vs]
        eng = self.engine

        def gen() -> Iterator[bytes]:
            for e in eng.events(since=since, until=until, filters=flt, follow=not until,
                                wanted=lambda: not req.client_gone()):
                yield json.dumps(convert.event(e)).encode() + b"\n"

        return Stream(gen())

    def system_df(self, req: Request) -> dict[str, Any]:
        rows = self.engine.system_df()
        return convert.system_df(rows, self.engine, self.images)

    def auth(self, req: Request) -> dict[str, Any]:
        body = req.json()
        convert.check_shape(body, convert.AUTH)
        server = body.get("serveraddress") or "docker.io"
        user, pw = body.get("username") or "", body.get("password") or ""
        if not user:
            raise ApiError(400, "username is required")
        host = convert.auth_server_host(server)
        self.images.login(host, user, pw, tls_verify=not convert.insecure_registry(host))
        return {"Status": "Login Succeeded", "IdentityToken": ""}

    # -- containers ------------------------------------------------------------------------------
    def containers_list(self, req: Request) -> list[dict[str, Any]]:
        eng = self.engine
        all_ = req.qbool("all")
        flt = req.filters()
        limit = req.qint("limit", -1)
        out = []
        for rec in eng.list(all=all_ or bool(flt.get("status")) or limit > 0):
            try:
                out.append(convert.container_summary(eng, rec))
            except NotFound:  # removed while listing
                continue
        out = convert.filter_containers(out, flt)
        out.sort(key=lambda c: c["Created"], reverse=True)
        if limit > 0:
            out = out[:limit]
        return out

    def container_create(self, req: Request) -> Response:
        body = req.json()
        convert.check_create_body(body)
        name = req.q("name")
        opts = convert.run_options(body, name)
        try:  # resolve, not exists: busybox:latest is made offline on first use
            self.engine.store.resolve(opts.image)
        except NotFound:  # clients pull on this exact message
            raise ApiError(404, f"No such image: {opts.image}") from None
        rep = self.engine.create(opts)
        return Response(201, {"Id": rep.id, "Warnings": list(rep.warnings)})

    def containers_prune(self, req: Request) -> dict[str, Any]:
        rep = self.engine.container_prune()
        ids = list(getattr(rep, "deleted", []) or getattr(rep, "ids", []) or [])
        return {"ContainersDeleted": ids, "SpaceReclaimed": int(getattr(rep, "space", 0) or 0)}

    def container_inspect(self, req: Request) -> dict[str, Any]:
        d = self.engine.inspect(req.params["id"])
        return convert.container_inspect(d)

    def container_start(self, req: Request) -> Response | None:
        eng = self.engine
        rec = eng.get(req.params["id"])
        if rec.state in ("running", "paused"):
            return Response(304)
        with self._attach_lock:
            waiters = self._attachers.pop(rec.id, [])
        try:
            if waiters:
                try:
                    sock = eng.start_attached(rec.id)
                except BaseException as exc:
                    for q in waiters:
                        q.put(exc)
                    raise
                waiters[0].put(sock)
                bundle = eng.paths(rec.id).bundle
                for q in waiters[1:]:
                    try:
                        q.put(_connect_attach(bundle))
                    except OSError as exc:
                        q.put(exc)
            else:
                eng.start(rec.id)
        except IsleError:
            if rec.opts.get("remove"):  # AutoRemove: Docker removes a container that cannot start
                with _suppress_all():
                    eng.rm(rec.id, force=True, volumes=True)
            raise
        return None

    def container_stop(self, req: Request) -> Response | None:
        eng = self.engine
        rec = eng.get(req.params["id"])
        if rec.state not in ("running", "paused"):
            return Response(304)
        t = req.q("t") or req.q("timeout")
        eng.stop(rec.id, int(t) if t else None)
        return None

    def container_restart(self, req: Request) -> None:
        t = req.q("t") or req.q("timeout")
        self.engine.restart(req.params["id"], int(t) if t else None)

    def container_kill(self, req: Request) -> None:
        eng = self.engine
        rec = eng.get(req.params["id"])
        if rec.state not in ("running", "paused"):
            raise ApiError(409, f"Cannot kill container: {req.params['id']}: container {rec.id} "
                                "is not running")
        sig = req.q("signal") or "KILL"
        eng.kill(rec.id, sig.removeprefix("SIG"))

    def container_pause(self, req: Request) -> None:
        self.engine.pause(req.params["id"])

    def container_unpause(self, req: Request) -> None:
        self.engine.unpause(req.params["id"])

    def container_wait(self, req: Request) -> Stream:
        """Headers at once (the wait is registered), the body when the condition is met."""
        eng = self.engine
        cond = req.q("condition") or "not-running"
        if cond not in ("not-running", "next-exit", "removed"):
            raise ApiError(400, f"invalid condition: {cond!r}")
        rec = eng.get(req.params["id"])
        cid = rec.id
        seq = convert.last_event_seq(eng)

        autoremove = cond == "removed" and bool(rec.opts.get("remove"))

        def gen() -> Iterator[bytes]:
            yield b" "  # chunked: flush the headers now; JSON allows leading space
            if autoremove:
                # Docker's daemon removes an AutoRemove container itself once it exits; waiting
                # for conmon's exit command (a fresh interpreter) costs ~50 ms of `run --rm`
                got = convert.wait_for(eng, cid, "next-exit", rec, seq, gone=req.client_gone)
                if got is None:
                    return  # the client went away: nothing to answer, no thread kept
                code0, err0 = got
                try:
                    eng.rm(cid, force=True, volumes=True)
                except NotFound:
                    pass  # the exit command was first
                except IsleError:
                    pass  # it still goes through the exit command's removal
                code, err = convert.wait_for(eng, cid, cond, rec, seq) or (code0, err0)
                if err == "" and code0 is not None and code != code0:
                    code, err = code0, err0
            else:
                got = convert.wait_for(eng, cid, cond, rec, seq, gone=req.client_gone)
                if got is None:
                    return
                code, err = got
            body: dict[str, Any] = {"StatusCode": code}
            body["Error"] = {"Message": err} if err else None
            yield json.dumps(body).encode() + b"\n"

        return Stream(gen())

    def container_delete(self, req: Request) -> None:
        eng = self.engine
        force = req.qbool("force")
        rec = eng.get(req.params["id"])
        if rec.state in ("running", "paused") and not force:
            raise ApiError(409, f"cannot remove container \"{rec.name}\": container is "
                                f"{rec.state}: stop the container before removing or force remove")
        eng.rm(rec.id, force=force, volumes=req.qbool("v"))

    def container_logs(self, req: Request) -> Stream:
        eng = self.engine
        rec = eng.get(req.params["id"])
        want_out, want_err = req.qbool("stdout"), req.qbool("stderr")
        if not (want_out or want_err):
            raise ApiError(400, "you must choose at least one stream")
        tail = req.q("tail") or "all"
        tail_n = -1 if tail == "all" else _int(tail, "tail")
        tty = bool(rec.opts.get("tty"))
        chunks = eng.logs(rec.id, follow=req.qbool("follow"), tail=tail_n,
                          since=convert.since_arg(req.q("since")),
                          until=convert.since_arg(req.q("until")),
                          timestamps=req.qbool("timestamps"),
                          wanted=lambda: not req.client_gone())

        def gen() -> Iterator[bytes]:
            for stream, data in chunks:
                if (stream == "stderr" and not want_err) or (stream != "stderr" and not want_out):
                    continue
                yield data if tty else mux_frame(2 if stream == "stderr" else 1, data)

        ctype = "application/vnd.docker.raw-stream" if tty else \
            "application/vnd.docker.multiplexed-stream"
        return Stream(gen(), content_type=ctype)

    def container_attach(self, req: Request) -> Hijack:
        """Docker's attach: output (and stdin with stdin=1) over the hijacked connection, through
        conmon's attach socket. Before the start, the start itself connects that socket (nothing
        the process writes is lost); logs=1 first replays the log."""
        eng = self.engine
        rec = eng.get(req.params["id"])
        tty = bool(rec.opts.get("tty"))
        want_out, want_err = req.qbool("stdout"), req.qbool("stderr")
        want_in = req.qbool("stdin") and bool(rec.opts.get("interactive"))
        logs, stream = req.qbool("logs"), req.qbool("stream")
        keys = _detach_keys(req.q("detachKeys") or ("ctrl-p,ctrl-q" if tty else ""))
        cid = rec.id
        api = self
        waiter: Any = None
        if stream and rec.state not in ("running", "paused"):
            import queue

            waiter = queue.Queue()
            with self._attach_lock:
                self._attachers.setdefault(cid, []).append(waiter)

        def send_out(sock: socket.socket, name: str, data: bytes) -> None:
            if (name == "stderr" and not want_err) or (name != "stderr" and not want_out):
                return
            sock.sendall(data if tty else mux_frame(2 if name == "stderr" else 1, data))

        def run(sock: socket.socket, rfile: Any) -> None:
            e = api.engine  # this thread's engine
            try:
                if logs:
                    for name, data in e.logs(cid, follow=False, tail=-1):
                        send_out(sock, name, data)
                if not stream:
                    return
                ctr = None
                if waiter is not None:
                    ctr = _await_start(waiter, e, cid, sock)
                    if ctr is None:
                        return
                else:
                    try:
                        ctr = _connect_attach(e.paths(cid).bundle)
                    except OSError:
                        return  # it stopped meanwhile: nothing more to stream
                with ctr:
                    _pump_attach(ctr, sock, rfile if want_in else None, send_out, keys)
            finally:
                if waiter is not None:
                    with api._attach_lock:
                        ws = api._attachers.get(cid, [])
                        if waiter in ws:
                            ws.remove(waiter)
                        if not ws:
                            api._attachers.pop(cid, None)
                    while not waiter.empty():  # a socket handed over as we gave up: close it
                        got = waiter.get_nowait()
                        if isinstance(got, socket.socket):
                            got.close()

        ctype = "application/vnd.docker.raw-stream" if tty else \
            "application/vnd.docker.multiplexed-stream"
        return Hijack(run, content_type=ctype)

    def container_resize(self, req: Request) -> Response:
        eng = self.engine
        rec = eng.get(req.params["id"])
        h, w = req.qint("h", 0), req.qint("w", 0)
        if not (0 <= h < 65536 and 0 <= w < 65536):
            raise ApiError(400, f"invalid terminal size {h}x{w}")
        if rec.state != "running":
            raise ApiError(409, f"Container {rec.id} is not running")
        if rec.opts.get("tty") and h and w:
            ctl = os.path.join(eng.paths(rec.id).bundle, "ctl")
            with _suppress():
                fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    os.write(fd, f"1 {h} {w}\n".encode())
                finally:
                    os.close(fd)
        return Response(200, raw=b"", content_type="text/plain")

    def container_top(self, req: Request) -> dict[str, Any]:
        args = req.q("ps_args").split() or None
        titles, rows = self.engine.top(req.params["id"], args)
        return {"Titles": titles, "Processes": rows}

    def container_stats(self, req: Request) -> Any:
        eng = self.engine
        rec = eng.get(req.params["id"])
        stream = req.qbool("stream", True) and not req.qbool("one-shot")
        if not stream:
            return convert.stats(eng, rec, interval=0.0 if req.qbool("one-shot") else 0.5)

        def gen() -> Iterator[bytes]:
            while True:
                r = eng.get(rec.id)
                if r.state not in ("running", "paused"):
                    return
                yield json.dumps(convert.stats(eng, r, interval=1.0)).encode() + b"\n"

        return Stream(gen())

    def container_rename(self, req: Request) -> None:
        new = req.q("name")
        if not new:
            raise ApiError(400, "name is required")
        self.engine.rename(req.params["id"], new)

    def container_update(self, req: Request) -> dict[str, Any]:
        changes, restart = convert.update_changes(req.json())
        _, warnings = self.engine.update(req.params["id"], changes, restart)
        return {"Warnings": warnings}

    def container_changes(self, req: Request) -> list[dict[str, Any]]:
        kinds = {"C": 0, "A": 1, "D": 2}
        return [{"Path": p, "Kind": kinds.get(k, 0)} for k, p in self.engine.diff(req.params["id"])]

    def container_export(self, req: Request) -> Stream:
        eng = self.engine
        rec = eng.get(req.params["id"])
        return Stream(_pipe_writer(lambda out: eng.export(rec.id, out)),
                      content_type="application/x-tar")

    @staticmethod
    def _path_q(req: Request) -> str:
        path = req.q("path")
        if not path:
            raise ApiError(400, "path is required")
        return path

    def _copy_out(self, cid: str, path: str) -> tuple[str, str, str]:
        """path copied out of the container into a new temporary directory (the caller removes
        it): (that directory, the copy, Docker's X-Docker-Container-Path-Stat for it)."""
        tmp = tempfile.mkdtemp(prefix="isle-api-cp-")
        out = os.path.join(tmp, "out")
        try:
            self.engine.cp(f"{cid}:{path}", out)
            st = os.lstat(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stat = {"name": os.path.basename(path.rstrip("/")) or "/", "size": st.st_size,
                "mode": convert.go_file_mode(st.st_mode), "mtime": convert.iso(st.st_mtime),
                "linkTarget": os.readlink(out) if os.path.islink(out) else ""}
        return tmp, out, base64.b64encode(json.dumps(stat).encode()).decode()

    def archive_head(self, req: Request) -> Response:
        tmp, _, h = self._copy_out(req.params["id"], self._path_q(req))
        shutil.rmtree(tmp, ignore_errors=True)
        return Response(200, raw=b"", headers={"X-Docker-Container-Path-Stat": h})

    def archive_get(self, req: Request) -> Stream:
        import tarfile

        path = self._path_q(req)
        rec = self.engine.get(req.params["id"])
        tmp, out, hdr = self._copy_out(rec.id, path)
        name = os.path.basename(path.rstrip("/")) or "."

        def write(stream: Any) -> None:
            try:
                with tarfile.open(fileobj=stream, mode="w|") as t:
                    t.add(out, arcname=name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        return Stream(_pipe_writer(write), content_type="application/x-tar",
                      headers={"X-Docker-Container-Path-Stat": hdr})

    def archive_put(self, req: Request) -> Response:
        import tarfile

        path = self._path_q(req)
        eng = self.engine
        rec = eng.get(req.params["id"])
        tmp = tempfile.mkdtemp(prefix="isle-api-put-")
        try:
            src = os.path.join(tmp, "in")
            os.mkdir(src)
            with tarfile.open(fileobj=_iterfile(req.body_chunks(4 << 30)), mode="r|*") as t:
                _safe_extract(t, src)
            for entry in sorted(os.listdir(src)):
                eng.cp(os.path.join(src, entry), f"{rec.id}:{path.rstrip('/')}/")
        except tarfile.TarError as exc:
            raise ApiError(400, f"the request body is not a tar archive: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Response(200, raw=b"", content_type="text/plain")

    def commit(self, req: Request) -> Response:
        cid = req.q("container")
        if not cid:
            raise ApiError(400, "container is required")
        repo = req.q("repo")
        tag = req.q("tag")
        ref = f"{repo}:{tag}" if repo and tag else repo
        changes = req.qlist("changes")
        img = self.engine.commit(cid, ref, changes=changes or None,
                                 message=req.q("comment"), author=req.q("author"),
                                 pause=req.qbool("pause", True))
        return Response(201, {"Id": getattr(img, "id", str(img))})

    # -- build -----------------------------------------------------------------------------------
    def build(self, req: Request) -> Stream:
        """The legacy builder's /build: the tar context (plain or compressed) is unpacked into a
        private temp dir (the same checks as archive PUT), built by the engine's builder, and its
        output sent as Docker's JSON stream. A client that goes away cancels the build."""
        import queue
        import tarfile

        if req.q("remote"):
            raise ApiError(501, "building from a remote context (remote=) is not supported: send "
                                "the context as a tar body")
        tags = [t for t in req.qlist("t") if t]
        dockerfile = req.q("dockerfile") or "Dockerfile"
        build_args = _json_map(req, "buildargs")
        labels = _json_map(req, "labels")
        target = req.q("target") or None
        network = req.q("networkmode") or "default"
        if network not in ("default", "bridge", "none", "host"):
            raise ApiError(400, f"networkmode {network!r} is not supported (default, none, host)")
        network = "default" if network == "bridge" else network
        quiet = req.qbool("q")
        for t in tags:
            _check_ref(t)
        tmp = tempfile.mkdtemp(prefix="isle-api-build-")
        os.chmod(tmp, 0o700)
        ctx = os.path.join(tmp, "context")
        os.mkdir(ctx)
        try:
            try:
                with tarfile.open(fileobj=_iterfile(req.body_chunks(MAX_BUILD_CONTEXT)),
                                  mode="r|*") as tar:
                    _safe_extract(tar, ctx)
            except tarfile.TarError as exc:
                raise ApiError(400, f"the build context is not a tar archive: {exc}") from None
            file = _build_file(ctx, tmp, dockerfile, labels, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        imgs = self.images
        lines: Any = queue.Queue()
        state: dict[str, Any] = {"cancel": False}

        def out(line: str) -> None:
            if state["cancel"]:
                raise _BuildCancelled("the client went away: build cancelled")
            if not quiet and not line.startswith("Successfully tagged "):  # said after the ID
                lines.put(json.dumps({"stream": line.rstrip("\n") + "\n"}).encode() + b"\n")

        def work() -> None:
            try:
                state["img"] = imgs.build(ctx, tags=tags, file=file, build_args=build_args,
                                          target=target, no_cache=req.qbool("nocache"),
                                          network=network, out=out)
            except BaseException as exc:  # noqa: BLE001 -- reported in the stream
                state["err"] = exc
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                lines.put(None)

        def gen() -> Iterator[bytes]:
            th = threading.Thread(target=work, daemon=True)
            th.start()
            try:
                while True:
                    item = lines.get()
                    if item is None:
                        break
                    yield item
                th.join()
                if "err" in state:
                    msg = str(state["err"])
                    yield json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() \
                        + b"\n"
                    return
                img = state["img"]
                yield json.dumps({"aux": {"ID": img.id}}).encode() + b"\n"
                if not quiet:
                    yield json.dumps({"stream": f"Successfully built {img.short_id}\n"}
                                     ).encode() + b"\n"
                    for t in tags:
                        yield json.dumps({"stream": f"Successfully tagged {_familiar(t)}\n"}
                                         ).encode() + b"\n"
                else:
                    yield json.dumps({"stream": f"{img.id}\n"}).encode() + b"\n"
            finally:
                state["cancel"] = True  # a no-op once done; else the builder stops at its next line
                th.join()

        return Stream(gen())

    def build_prune(self, req: Request) -> dict[str, Any]:
        return {"CachesDeleted": [], "SpaceReclaimed": 0}

    # -- exec ------------------------------------------------------------------------------------
    def exec_create(self, req: Request) -> Response:
        eng = self.engine
        rec = eng.get(req.params["id"])
        if rec.state != "running":
            raise ApiError(409, f"container {rec.id} is not running")
        body = req.json()
        convert.check_shape(body, convert.EXEC_CREATE)
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd or not isinstance(cmd, list):
            raise ApiError(400, "No exec command specified")
        cs = body.get("ConsoleSize")
        if cs is not None and not (isinstance(cs, list) and len(cs) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536 for v in cs)):
            raise ApiError(400, "ConsoleSize: want [height, width] (unsigned integers)")
        xid = os.urandom(32).hex()
        with self._execs_lock:
            self.execs[xid] = {
                "ID": xid, "ContainerID": rec.id, "Running": False, "ExitCode": None, "Pid": 0,
                "OpenStdin": bool(body.get("AttachStdin")), "OpenStdout":
                bool(body.get("AttachStdout", True)), "OpenStderr": bool(body.get("AttachStderr",
                                                                                  True)),
                "ProcessConfig": {"entrypoint": cmd[0], "arguments": cmd[1:],
                                  "tty": bool(body.get("Tty")), "privileged":
                                  bool(body.get("Privileged")), "user": body.get("User") or ""},
                "_cmd": [str(c) for c in cmd], "_env": list(body.get("Env") or []),
                "_workdir": body.get("WorkingDir") or "", "CanRemove": False,
                "DetachKeys": body.get("DetachKeys") or "",
            }
            if cs and all(cs):
                self.execs[xid]["_size"] = (int(cs[0]), int(cs[1]))
        return Response(201, {"Id": xid})

    def _exec(self, xid: str) -> dict[str, Any]:
        with self._execs_lock:
            x = self.execs.get(xid)
        if x is None:
            raise NotFound(f"No such exec instance: {xid}")
        return x

    def exec_inspect(self, req: Request) -> dict[str, Any]:
        x = self._exec(req.params["id"])
        return {k: v for k, v in x.items() if not k.startswith("_")}

    def exec_resize(self, req: Request) -> Response:
        x = self._exec(req.params["id"])
        h, w = req.qint("h", 0), req.qint("w", 0)
        if not (0 <= h < 65536 and 0 <= w < 65536):
            raise ApiError(400, f"invalid terminal size {h}x{w}")
        if h and w:
            x["_size"] = (h, w)
            _set_winsize(x.get("_master", -1), h, w)
        return Response(200, raw=b"", content_type="text/plain")

    def exec_start(self, req: Request) -> Any:
        x = self._exec(req.params["id"])
        body = req.json(default={})
        if x["Running"] or x["ExitCode"] is not None:
            raise ApiError(409, f"exec {x['ID']} has already run")
        detach = bool(body.get("Detach"))
        tty = bool(body.get("Tty", x["ProcessConfig"]["tty"]))
        x["Running"] = True
        api = self

        def run_exec(stdin: int | None, out: int, err: int) -> int:
            return int(api.engine.exec(x["ContainerID"], x["_cmd"], env=x["_env"],
                                       user=x["ProcessConfig"]["user"], workdir=x["_workdir"],
                                       privileged=x["ProcessConfig"]["privileged"],
                                       interactive=stdin is not None, detach=False, tty=False,
                                       stdio=(stdin, out, err)))

        if detach:
            def bg() -> None:
                try:
                    x["ExitCode"] = run_exec(None, os.open(os.devnull, os.O_WRONLY),
                                             os.open(os.devnull, os.O_WRONLY))
                except IsleError:
                    x["ExitCode"] = 126
                finally:
                    x["Running"] = False

            threading.Thread(target=bg, daemon=True).start()
            return None

        def run_exec_tty(console: str) -> int:
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                return int(api.engine.exec(
                    x["ContainerID"], x["_cmd"], env=x["_env"], user=x["ProcessConfig"]["user"],
                    workdir=x["_workdir"], privileged=x["ProcessConfig"]["privileged"],
                    interactive=False, detach=False, tty=True, stdio=(None, null, null),
                    console_socket=console))
            finally:
                os.close(null)

        def run(sock: socket.socket, rfile: Any) -> None:
            try:
                if tty:
                    x["ExitCode"] = _exec_with_pty(run_exec_tty, sock, x, stdin=x["OpenStdin"])
                else:
                    x["ExitCode"] = _exec_over_socket(run_exec, sock, rfile, tty=tty,
                                                      stdin=x["OpenStdin"])
            except IsleError as exc:
                with _suppress():
                    sock.sendall(mux_frame(2, f"{exc}\n".encode()) if not tty
                                 else f"{exc}\n".encode())
                x["ExitCode"] = 126
            finally:
                x["Running"] = False

        ctype = "application/vnd.docker.raw-stream" if tty else \
            "application/vnd.docker.multiplexed-stream"
        return Hijack(run, content_type=ctype)

    # -- images ----------------------------------------------------------------------------------
    def images_list(self, req: Request) -> list[dict[str, Any]]:
        flt = req.filters()
        filters = [f"{k}={v}" for k, vs in flt.items() for v in vs]
        imgs = self.images.list(filters or None)
        users: dict[str, int] = {}
        for r in self.engine.list(all=True):
            users[r.image_id] = users.get(r.image_id, 0) + 1
        return [convert.image_summary(i, users.get(i.id, 0)) for i in imgs]

    def image_create(self, req: Request) -> Stream:
        src = req.q("fromSrc")
        if src:
            return self._image_import(req, src)
        image = req.q("fromImage")
        if not image:
            raise ApiError(400, "fromImage is required")
        tag = req.q("tag")
        ref = image
        if tag:
            ref = f"{image}@{tag}" if tag.startswith("sha256:") else f"{image}:{tag}"
        elif "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
            ref = f"{image}:latest"
        creds = convert.registry_auth(req.headers.get("X-Registry-Auth"))
        host = convert.registry_host(ref)
        imgs = self.images

        def pulled(img: Any) -> list[dict[str, Any]]:
            return [{"status": f"Digest: {img.digest}"},
                    {"status": f"Status: Downloaded newer image for {ref}"}]

        prog = convert.JsonProgress()
        prog.message(f"Pulling from {ref.rsplit(':', 1)[0]}")
        return Stream(_progress_stream(prog, lambda: imgs.pull(
            ref, tls_verify=not convert.insecure_registry(host), creds=creds, progress=prog),
            pulled))

    def _image_import(self, req: Request, src: str) -> Stream:
        """docker import: the body is the rootfs tar (fromSrc=-); URLs are not fetched."""
        if src != "-":
            raise ApiError(501, "importing from a URL is not supported: send the tar as the body "
                                "(fromSrc=-)")
        repo, tag = req.q("repo"), req.q("tag")
        ref = None
        if repo:
            ref = f"{repo}:{tag}" if tag else repo
            _check_ref(ref)
        img = _spooled(req, "isle-api-import-",
                       lambda f: self.images.import_(f, ref, req.qlist("changes"),
                                                     req.q("message")))
        return Stream(iter([json.dumps({"status": img.id}).encode() + b"\n"]))

    def images_prune(self, req: Request) -> dict[str, Any]:
        flt = req.filters()
        dangling = flt.get("dangling", ["true"])[-1].lower() in ("1", "true")
        ids = self.images.prune(all_images=not dangling)
        return {"ImagesDeleted": [{"Deleted": i} for i in ids], "SpaceReclaimed": 0}

    def images_search(self, req: Request) -> None:
        raise ApiError(501, "image search is not supported: isle talks to registries by name only")

    def image_inspect(self, req: Request) -> dict[str, Any]:
        out: dict[str, Any] = self.images.inspect(req.params["name"])
        return out

    def image_history(self, req: Request) -> list[dict[str, Any]]:
        rows = self.images.history(req.params["name"])
        out = []
        for r in rows:
            out.append({"Id": r.get("Id", "<missing>"), "Created": int(convert.parse_time(
                r.get("Created") or "") or 0), "CreatedBy": r.get("CreatedBy", ""),
                "Tags": r.get("Tags"), "Size": r.get("Size", 0), "Comment": r.get("Comment", "")})
        return out

    def image_tag(self, req: Request) -> Response:
        repo = req.q("repo")
        if not repo:
            raise ApiError(400, "repo is required")
        tag = req.q("tag") or "latest"
        self.images.tag(req.params["name"], f"{repo}:{tag}")
        return Response(201, raw=b"", content_type="text/plain")

    def image_push(self, req: Request) -> Stream:
        name = req.params["name"]
        tag = req.q("tag")
        ref = f"{name}:{tag}" if tag else name
        self.images.resolve(ref)
        creds = convert.registry_auth(req.headers.get("X-Registry-Auth"))
        host = convert.registry_host(ref)
        imgs = self.images

        def pushed(d: str) -> list[dict[str, Any]]:
            return [{"status": f"{tag or 'latest'}: digest: {d}",
                     "aux": {"Tag": tag or "latest", "Digest": d}}]

        prog = convert.JsonProgress(verb="Pushed")
        prog.message(f"The push refers to repository [{ref.rsplit(':', 1)[0]}]")
        return Stream(_progress_stream(prog, lambda: imgs.push(
            ref, tls_verify=not convert.insecure_registry(host), creds=creds, progress=prog),
            pushed))

    def image_delete(self, req: Request) -> list[dict[str, str]]:
        name = req.params["name"]
        img = self.images.resolve(name)
        removed = self.images.remove([name], force=req.qbool("force"))
        out: list[dict[str, str]] = []
        for r in removed:
            if r.startswith("sha256:") or r == img.id:
                out.append({"Deleted": r})
            else:
                out.append({"Untagged": r})
        return out or [{"Untagged": name}]

    def images_get(self, req: Request) -> Stream:
        names = req.qlist("names")
        if not names:
            raise ApiError(400, "names is required")
        for n in names:
            self.images.resolve(n)
        imgs = self.images
        return Stream(_pipe_writer(lambda out: imgs.save(names, out)),
                      content_type="application/x-tar")

    def image_get(self, req: Request) -> Stream:
        name = req.params["name"]
        self.images.resolve(name)
        imgs = self.images
        return Stream(_pipe_writer(lambda out: imgs.save([name], out)),
                      content_type="application/x-tar")

    def images_load(self, req: Request) -> Response:
        loaded = _spooled(req, "isle-api-load-", self.images.load)
        lines = []
        for img in loaded:
            names = img.names or [img.id]
            for n in names:
                what = "Loaded image" if n != img.id else "Loaded image ID"
                lines.append(json.dumps({"stream": f"{what}: {n}\n"}))
        return Response(200, raw=("\n".join(lines) + "\n").encode())

    # -- networks --------------------------------------------------------------------------------
    def networks_list(self, req: Request) -> list[dict[str, Any]]:
        flt = req.filters()
        out = [convert.network(n) for n in self.networks.list()]
        if flt.get("name"):
            out = [n for n in out if any(f in n["Name"] for f in flt["name"])]
        if flt.get("id"):
            out = [n for n in out if any(n["Id"].startswith(f) for f in flt["id"])]
        if flt.get("driver"):
            out = [n for n in out if n["Driver"] in flt["driver"]]
        return out

    def _net(self, ref: str) -> str:
        """A network's name from its name, id or id prefix (Docker accepts all three)."""
        nets = self.networks.list()
        for n in nets:
            if ref in (n["Name"], n["Id"]):
                return str(n["Name"])
        hits = [n for n in nets if n["Id"].startswith(ref)]
        if len(hits) == 1:
            return str(hits[0]["Name"])
        if len(hits) > 1:
            raise ApiError(400, f"network {ref} is ambiguous ({len(hits)} matches found)")
        raise ApiError(404, f"network {ref} not found")

    def network_inspect(self, req: Request) -> dict[str, Any]:
        return convert.network(self.networks.inspect(self._net(req.params["id"])))

    def network_create(self, req: Request) -> Response:
        body = req.json()
        convert.check_network_body(body)
        name = body.get("Name")
        if not name or not isinstance(name, str):
            raise ApiError(400, "Name is required")
        subnets, gateways, ranges = [], [], []
        for c in ((body.get("IPAM") or {}).get("Config") or []):
            if c.get("Subnet"):
                subnets.append(c["Subnet"])
            if c.get("Gateway"):
                gateways.append(c["Gateway"])
            if c.get("IPRange"):
                ranges.append(c["IPRange"])
        labels = [f"{k}={v}" for k, v in (body.get("Labels") or {}).items()]
        options = [f"{k}={v}" for k, v in (body.get("Options") or {}).items()]
        n = self.networks.create(name, subnet=subnets, gateway=gateways, ip_range=ranges,
                                 internal=bool(body.get("Internal")), labels=labels,
                                 ipv6=bool(body.get("EnableIPv6")),
                                 driver=body.get("Driver") or "bridge", options=options)
        return Response(201, {"Id": convert.network(n)["Id"], "Warning": ""})

    def network_delete(self, req: Request) -> None:
        self.networks.remove([self._net(req.params["id"])])

    def networks_prune(self, req: Request) -> dict[str, Any]:
        return {"NetworksDeleted": self.networks.prune()}

    def network_connect(self, req: Request) -> None:
        body = req.json()
        convert.check_connect_body(body)
        ctr = body.get("Container")
        if not ctr:
            raise ApiError(400, "Container is required")
        ep = body.get("EndpointConfig") or {}
        ipam = ep.get("IPAMConfig") or {}
        ips = [v for v in (ipam.get("IPv4Address"), ipam.get("IPv6Address")) if v]
        self.networks.connect(self._net(req.params["id"]), ctr, ip=ips,
                              aliases=ep.get("Aliases") or [])

    def network_disconnect(self, req: Request) -> None:
        body = req.json()
        convert.check_shape(body, convert.CONNECT)
        ctr = body.get("Container")
        if not ctr:
            raise ApiError(400, "Container is required")
        self.networks.disconnect(self._net(req.params["id"]), ctr)

    # -- volumes ---------------------------------------------------------------------------------
    def volumes_list(self, req: Request) -> dict[str, Any]:
        flt = req.filters()
        vols = [convert.volume(self.engine.volumes.inspect(v.name)) for v in
                self.engine.volumes.list()]
        if flt.get("name"):
            vols = [v for v in vols if any(f in v["Name"] for f in flt["name"])]
        return {"Volumes": vols, "Warnings": []}

    def volume_create(self, req: Request) -> Response:
        body = req.json(default={})
        convert.check_shape(body, convert.VOLUME_CREATE)
        v = self.engine.volumes.create(body.get("Name") or "", body.get("Labels") or {},
                                       body.get("Driver") or "local")
        return Response(201, convert.volume(self.engine.volumes.inspect(v.name)))

    def volume_inspect(self, req: Request) -> dict[str, Any]:
        return convert.volume(self.engine.volumes.inspect(req.params["name"]))

    def volume_delete(self, req: Request) -> None:
        self.engine.volume_rm(req.params["name"], force=req.qbool("force"))

    def volumes_prune(self, req: Request) -> dict[str, Any]:
        rep = self.engine.volume_prune()
        return {"VolumesDeleted": list(getattr(rep, "deleted", []) or []), "SpaceReclaimed": 0}


# -- helpers -----------------------------------------------------------------------------------
def _docker_not_found(pattern: str, fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Docker's wording for a missing object ("No such container: x"): clients match on it."""
    if "(?P<id>" in pattern and pattern.startswith("/containers/"):
        what, key = "container", "id"
    elif "(?P<name>" in pattern and pattern.startswith("/images/"):
        what, key = "image", "name"
    else:
        return fn

    def wrapped(req: Request) -> Any:
        try:
            return fn(req)
        except NotFound as exc:
            msg = str(exc)
            if msg.startswith("No such"):
                raise
            raise ApiError(404, f"No such {what}: {req.params.get(key, '')}") from None

    return wrapped


def _int(v: str, name: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {v!r}") from None


def _progress_stream(prog: Any, work: Callable[[], Any],
                     done: Callable[[Any], list[dict[str, Any]]]) -> Iterator[bytes]:
    """A pull or push as Docker streams it: work() runs in a thread reporting to prog (a
    convert.JsonProgress) while its lines go out; then done(its result)'s lines, or the error
    line. A client gone (GeneratorExit) cancels the work at its next progress report and
    waits for it to undo itself."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["ok"] = work()
        except BaseException as exc:  # noqa: BLE001 -- reported in the stream
            result["err"] = exc
        finally:
            prog.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield from prog.lines()
    finally:
        prog.cancel()
        th.join()
    if "err" in result:
        msg = str(result["err"])
        yield json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() + b"\n"
        return
    for line in done(result["ok"]):
        yield json.dumps(line).encode() + b"\n"


def _spooled(req: Request, prefix: str, use: Callable[[Any], Any]) -> Any:
    """use(the request body as a file): the body (up to 64 GiB) spooled to a temporary tar
    first, removed after."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in req.body_chunks(64 << 30):
                f.write(chunk)
        with open(path, "rb") as f:
            return use(f)
    finally:
        os.unlink(path)


class _suppress:  # noqa: N801 -- used like contextlib.suppress(OSError)
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        return et is not None and issubclass(et, OSError)


class _suppress_all:  # noqa: N801
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        return et is not None and issubclass(et, Exception)


def _wait_started(eng: Any, cid: str, sock: socket.socket) -> None:
    """Until the container has been started (or the client went away)."""
    while True:
        try:
            rec = eng.get(cid)
        except NotFound:
            return
        if rec.state != "created" or rec.started_at:
            return
        r, _, _ = select.select([sock], [], [], 0.02)
        if r:
            try:
                if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    pass  # half-closed by the client: it still reads
            except BlockingIOError:
                pass
            except OSError:
                return


def _connect_attach(bundle: str) -> socket.socket:
    from isle.engine.monitor import connect_attach

    return connect_attach(bundle)


def _detach_keys(spec: str) -> bytes:
    """Docker's detach keys ("ctrl-p,ctrl-q", "a,ctrl-c") as the bytes a terminal sends."""
    out = bytearray()
    for k in filter(None, (x.strip() for x in spec.split(","))):
        if len(k) == 1:
            out.append(ord(k))
        elif k.startswith("ctrl-") and len(k) in (6, 7):
            c = k[5:]
            codes = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if len(c) == 1 and c.isalpha():
                out.append(ord(c.lower()) - ord("a") + 1)
            elif c in codes:
                out.append(codes[c])
            else:
                raise ApiError(400, f"invalid detach keys {spec!r}: unknown key {k!r}")
        else:
            raise ApiError(400, f"invalid detach keys {spec!r}: unknown key {k!r}")
    return bytes(out)


def _client_gone(sock: socket.socket) -> bool:
    """The client closed its connection entirely (not just its sending side: docker sends its
    stdin's EOF as a half-close and still reads)."""
    p = select.poll()
    p.register(sock, select.POLLHUP | select.POLLERR)
    return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))


def _await_start(waiter: Any, eng: Any, cid: str, sock: socket.socket) -> socket.socket | None:
    """conmon's attach socket once the container starts (handed over by the start request, or
    connected here when something else started it); None if the client or container went away."""
    import queue

    checked = time.monotonic()
    while True:
        try:
            got = waiter.get(timeout=0.05)
        except queue.Empty:
            got = None
        if isinstance(got, socket.socket):
            return got
        if isinstance(got, BaseException):
            return None
        if _client_gone(sock):
            return None
        if time.monotonic() - checked > 0.5:
            checked = time.monotonic()
            try:
                rec = eng.get(cid)
            except NotFound:
                return None
            if rec.state in ("running", "paused"):  # started elsewhere (isle start)
                try:
                    return _connect_attach(eng.paths(cid).bundle)
                except OSError:
                    return None


def _pump_attach(ctr: socket.socket, sock: socket.socket, rfile: Any,
                 send_out: Callable[[socket.socket, str, bytes], None], keys: bytes) -> None:
    """conmon's packets ([stream byte] + data) -> the client; the client's bytes -> the
    container's stdin (rfile given), EOF as a half-close; until the container's output ends, the
    client leaves, or it types the detach keys."""
    from isle.engine.monitor import STDERR

    poll = select.poll()
    poll.register(ctr, select.POLLIN)
    cflags = select.POLLHUP | select.POLLERR | (select.POLLIN if rfile is not None else 0)
    poll.register(sock, cflags)
    reading = rfile is not None
    typed = b""
    while True:
        for fd, ev in poll.poll():
            if fd == ctr.fileno():
                data = ctr.recv(1 << 16)
                if not data:
                    return
                send_out(sock, "stderr" if data[0] == STDERR else "stdout", data[1:])
                continue
            if reading and ev & select.POLLIN:
                try:
                    d = sock.recv(1 << 16)
                except OSError:
                    d = b""
                if not d:
                    reading = False
                    poll.modify(sock, select.POLLHUP | select.POLLERR)
                    with _suppress():
                        ctr.shutdown(socket.SHUT_WR)  # conmon closes the container's stdin
                    continue
                if keys:
                    typed = (typed + d)[-len(keys):]
                    i = d.find(keys)
                    if i >= 0 or typed == keys:
                        if i > 0:
                            ctr.sendall(d[:i])
                        return  # detached: the container keeps running
                for i in range(0, len(d), 8192):  # one packet each, within conmon's buffer
                    ctr.sendall(d[i:i + 8192])
            elif ev & (select.POLLHUP | select.POLLERR):
                return  # the client is gone


class _BuildCancelled(IsleError):
    pass


#: a build context bigger than this is refused (Docker has no limit; a disk has)
MAX_BUILD_CONTEXT = 8 << 30


def _json_map(req: Request, name: str) -> dict[str, str]:
    """A query parameter holding a JSON object of strings (buildargs, labels)."""
    raw = req.q(name)
    if not raw:
        return {}
    try:
        v = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid {name}: not JSON: {raw[:200]!r}") from None
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ApiError(400, f"invalid {name}: want a JSON object of strings")
    out = {}
    for k, x in v.items():
        if x is None:
            continue
        if not isinstance(x, str):
            raise ApiError(400, f"invalid {name}: the value of {k!r} is not a string")
        out[k] = x
    return out


def _check_ref(ref: str) -> None:
    from isle.image.reference import Reference

    try:
        Reference.parse(ref)
    except Exception as exc:  # noqa: BLE001 -- the parser's own message
        raise ApiError(400, f"invalid reference format: {ref!r}: {exc}") from None


def _familiar(ref: str) -> str:
    from isle.image.reference import Reference

    try:
        r = Reference.parse(ref)
        return str(r.familiar)
    except Exception:  # noqa: BLE001
        return ref


def _build_file(ctx: str, tmp: str, dockerfile: str, labels: dict[str, str],
                target: str | None) -> str:
    """The Dockerfile inside the unpacked context (never outside it); with labels, a copy outside
    the context with LABEL lines added to the stage built (the target or the last)."""
    import posixpath

    rel = posixpath.normpath(dockerfile.lstrip("/"))
    if rel.startswith("..") or rel in (".", ""):
        raise ApiError(400, f"dockerfile {dockerfile!r} is outside the build context")
    path = os.path.join(ctx, rel)
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(ctx) + os.sep) or not os.path.isfile(real):
        if rel == "Dockerfile" and os.path.isfile(os.path.join(ctx, "Containerfile")):
            real = os.path.join(ctx, "Containerfile")
        else:
            raise ApiError(400, f"Cannot locate specified Dockerfile: {dockerfile}")
    if not labels:
        return real
    with open(real, errors="replace") as f:
        text = f.read().splitlines()
    label = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
    at = len(text)
    if target:
        rx = re.compile(r"^\s*FROM\s+(\S+\s+)*AS\s+" + re.escape(target) + r"\s*$", re.I)
        start = next((i for i, ln in enumerate(text) if rx.match(ln)), None)
        if start is not None:
            nxt = next((i for i in range(start + 1, len(text))
                        if re.match(r"^\s*FROM\s", text[i], re.I)), None)
            at = nxt if nxt is not None else len(text)
    text.insert(at, label)
    out = os.path.join(tmp, "Dockerfile.labels")
    with open(out, "w") as f:
        f.write("\n".join(text) + "\n")
    return out


def _pipe_writer(write: Callable[[Any], None]) -> Iterator[bytes]:
    """Run write(file) in a thread and yield what it writes (tar streams, saves, exports)."""
    r, w = os.pipe()
    err: list[BaseException] = []

    def work() -> None:
        try:
            with os.fdopen(w, "wb") as out:
                write(out)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the reader
            err.append(exc)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    with os.fdopen(r, "rb") as f:
        while True:
            b = f.read(1 << 16)
            if not b:
                break
            yield b
    th.join()
    if err and not isinstance(err[0], (BrokenPipeError,)):
        raise err[0]


def _safe_extract(t: Any, dest: str) -> None:
    """Unpack a client's tar stream into dest (a fresh private dir) and nowhere else: no absolute
    names, no '..', no device nodes, links only to places inside; member by member, since the
    interpreter may predate tarfile's extraction filters."""
    import posixpath
    import tarfile

    for m in t:
        name = posixpath.normpath(m.name.lstrip("/"))
        if name in (".", "") or name.startswith("../") or name == "..":
            if name in (".", ""):
                continue
            raise ApiError(400, f"archive member {m.name!r} points outside the destination")
        if m.isdev() or m.isfifo():
            raise ApiError(400, f"archive member {m.name!r}: device nodes cannot be copied")
        if m.issym() or m.islnk():
            target = m.linkname if m.issym() else m.linkname.lstrip("/")
            base = posixpath.dirname(name) if m.issym() else ""
            if m.issym() and target.startswith("/"):
                pass  # absolute symlinks are copied as they are: they resolve inside the container
            elif posixpath.normpath(posixpath.join(base, target)).startswith(".."):
                raise ApiError(400, f"archive member {m.name!r} links outside the destination")
        # refuse to write through a symlink made by an earlier member
        parent = os.path.dirname(os.path.join(dest, name))
        if os.path.realpath(parent) != os.path.normpath(parent) and \
                not os.path.realpath(parent).startswith(os.path.realpath(dest) + os.sep):
            raise ApiError(400, f"archive member {m.name!r} would be written through a link")
        if os.path.islink(os.path.dirname(os.path.join(dest, name))):
            raise ApiError(400, f"archive member {m.name!r} would be written through a link")
        m.name = name
        m.mode &= 0o7777
        try:
            t.extract(m, dest, set_attrs=True, numeric_owner=True)
        except tarfile.ExtractError as exc:
            raise ApiError(400, f"archive member {m.name!r}: {exc}") from None


def _iterfile(chunks: Iterator[bytes]) -> Any:
    """The request body as a readable file (the image archive code's reader over chunks)."""
    from isle.image.archive import IterFile

    return IterFile(chunks)


def _set_winsize(fd: int, h: int, w: int) -> None:
    if fd < 0:
        return
    import fcntl
    import struct
    import termios

    with _suppress():
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))


def _exec_with_pty(run_exec_tty: Callable[[str], int], sock: socket.socket, x: dict[str, Any],
                   *, stdin: bool) -> int:
    """Run a tty exec whose runtime hands its pty master to a console socket of ours; copy the
    master to the client (raw) and the client to the master; resizes go to x["_master"]."""
    d = tempfile.mkdtemp(prefix="isle-api-tty-")  # short: sun_path holds 108 bytes
    path = os.path.join(d, "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    result: dict[str, Any] = {}
    master = -1
    try:
        srv.bind(path)
        srv.listen(1)

        def work() -> None:
            try:
                result["code"] = run_exec_tty(path)
            except BaseException as exc:  # noqa: BLE001 -- re-raised below
                result["err"] = exc

        th = threading.Thread(target=work, daemon=True)
        th.start()
        while master < 0 and th.is_alive():
            r, _, _ = select.select([srv], [], [], 0.05)
            if r:
                conn, _ = srv.accept()
                with conn:
                    _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                if fds:
                    master = fds[0]
        if master >= 0:
            x["_master"] = master
            if x.get("_size"):
                _set_winsize(master, *x["_size"])
            poll = select.poll()
            poll.register(master, select.POLLIN)
            poll.register(sock, select.POLLHUP | select.POLLERR | (select.POLLIN if stdin else 0))
            done = False
            while not done:
                for fd, ev in poll.poll():
                    if fd == master:
                        try:
                            data = os.read(master, 1 << 16)
                        except OSError:  # EIO: the last holder of the pty's slave is gone
                            data = b""
                        if not data:
                            done = True
                            break
                        sock.sendall(data)
                    elif ev & select.POLLIN:
                        try:
                            d2 = sock.recv(1 << 16)
                        except OSError:
                            d2 = b""
                        if not d2:
                            poll.modify(sock, select.POLLHUP | select.POLLERR)
                            with _suppress():
                                os.write(master, b"\x04")  # EOF for a canonical-mode reader
                            continue
                        with _suppress():
                            os.write(master, d2)
                    else:
                        done = True  # the client is gone: the process gets SIGHUP below
                        break
        if master >= 0:
            x.pop("_master", None)
            os.close(master)
            master = -1
        th.join()
    finally:
        if master >= 0:
            x.pop("_master", None)
            os.close(master)
        srv.close()
        shutil.rmtree(d, ignore_errors=True)
    if "err" in result:
        raise result["err"]
    return int(result.get("code", 0))


def _exec_over_socket(run_exec: Callable[[int | None, int, int], int], sock: socket.socket,
                      rfile: Any, *, tty: bool, stdin: bool) -> int:
    """Run the exec with pipes; copy its output (framed unless tty) to the client, the client's
    input to its stdin; its exit code."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r = in_w = -1
    if stdin:
        in_r, in_w = os.pipe()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["code"] = run_exec(in_r if stdin else None, out_w, err_w)
        except BaseException as exc:  # noqa: BLE001 -- re-raised below
            result["err"] = exc
        finally:
            os.close(out_w)
            os.close(err_w)
            if in_r >= 0:
                os.close(in_r)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    open_fds = {out_r: 1, err_r: 2}
    watch: list[Any] = [out_r, err_r]
    if stdin:
        watch.append(sock)
    try:
        while open_fds:
            r, _, _ = select.select(watch, [], [], 1.0)
            for fd in r:
                if fd is sock:
                    try:
                        d = sock.recv(65536)
                    except OSError:
                        d = b""
                    if not d:
                        watch.remove(sock)
                        if in_w >= 0:
                            os.close(in_w)
                            in_w = -1
                    elif in_w >= 0:
                        with _suppress():
                            os.write(in_w, d)
                    continue
                data = os.read(fd, 65536)
                if not data:
                    watch.remove(fd)
                    del open_fds[fd]
                    os.close(fd)
                    continue
                sock.sendall(data if tty else mux_frame(open_fds[fd], data))
    finally:
        for fd in list(open_fds):
            os.close(fd)
        if in_w >= 0:
            os.close(in_w)
    th.join()
    if "err" in result:
        raise result["err"]
    return int(result.get("code", 0))
