"""Layers fetched and unpacked by forked workers: a process per layer, one pass over its bytes.

A worker streams its layer blob from the registry into ``tmp/`` while hashing it, and
decompresses, hashes and unpacks the same bytes into its own ``tmp/layer-*`` directory as they
arrive. Workers are processes, not threads: tar parsing is Python and threads would take turns on
the interpreter lock. At most ``jobs`` run at once, biggest layer first. A worker writes only in
``tmp/``; the parent publishes a layer's blob and directory after the worker reported that
digest, size and diff_id matched. The first failure stops the other workers (SIGKILL) and
removes their files. Workers die with the parent (``PR_SET_PDEATHSIG``), so a pull killed midway
leaves nothing but ``tmp/`` debris, which gc removes.

Parent and worker talk over a pipe in JSON lines: the ``Progress`` calls, then ``result`` or
``error``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from isle.errors import ImageError, NotFound, RegistryError
from isle.image.layers import BUF, HashReader, IterReader, unpack_layer
from isle.image.registry import httpx
from isle.oci.image_spec import Descriptor, layer_compression

if TYPE_CHECKING:
    from collections.abc import Callable

    from isle.image.pull import Progress
    from isle.image.registry import RegistryClient
    from isle.image.store import ImageStore

__all__ = ["fetch_layers"]

_ERRORS: dict[str, type[Exception]] = {
    "ImageError": ImageError,
    "RegistryError": RegistryError,
    "NotFound": NotFound,
}


@dataclass(slots=True)
class _Worker:
    pid: int
    fd: int
    layer: Descriptor
    diff_id: str
    tmpd: str
    blob_tmp: str
    buf: bytes = b""
    result: dict[str, Any] | None = None
    error: Exception | None = None


def fetch_layers(
    store: ImageStore,
    client: RegistryClient,
    repo: str,
    todo: list[tuple[Descriptor, str]],
    prog: Progress,
    jobs: int,
) -> None:
    """Fetch, verify and unpack each (layer, diff_id) of ``todo``; publish each in the store."""
    pending = sorted(todo, key=lambda t: t[0].size, reverse=True)
    running: dict[int, _Worker] = {}
    error: BaseException | None = None
    # workers import nothing: a module lock held by another thread at fork time (the CLI's
    # progress bar runs one) would never be released in the child
    from isle.sys import libc

    libc.libc()
    if any(layer_compression(lay.media_type) == "zstd" for lay, _ in todo):
        import zstandard  # noqa: F401
    poll = select.poll()
    try:
        while running or (pending and error is None):
            while pending and error is None and len(running) < max(1, jobs):
                lay, did = pending.pop(0)
                w = _spawn(store, client, repo, lay, did, libc, list(running))
                running[w.fd] = w
                poll.register(w.fd, select.POLLIN)
            for fd, _ in poll.poll():
                w = running[fd]
                data = os.read(fd, 1 << 16)
                if data:
                    _feed(w, data, prog)
                    continue
                del running[fd]
                poll.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(w.pid, 0)
                w.pid = 0
                if w.error is None and w.result is None:
                    w.error = ImageError(
                        f"layer {w.layer.digest}: unpack worker died ({_status(status)})"
                    )
                if w.error is not None:
                    prog.done(w.layer.digest, "failed")
                    error = error or w.error
                    _cleanup(w)
                    if running:  # stop the others now: the pull has failed
                        for o in running.values():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(o.pid, signal.SIGKILL)
                    continue
                try:
                    _publish(store, w)
                except BaseException as e:
                    error = error or e
                    _cleanup(w)
                    continue
                assert w.result is not None
                prog.done(w.layer.digest, w.result["status"])
    finally:
        for w in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
            os.waitpid(w.pid, 0)
            os.close(w.fd)
            _cleanup(w)
    if error is not None:
        raise error


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _feed(w: _Worker, data: bytes, prog: Progress) -> None:
    w.buf += data
    *lines, w.buf = w.buf.split(b"\n")
    for line in lines:
        kind, *args = json.loads(line)
        if kind == "advance":
            prog.advance(args[0], args[1])
        elif kind == "start":
            prog.start(args[0], args[1])
        elif kind == "message":
            prog.message(args[0])
        elif kind == "result":
            w.result = args[0]
        elif kind == "error":
            name, msg = args
            cls = _ERRORS.get(name)
            w.error = cls(msg) if cls else ImageError(f"layer {w.layer.digest}: {name}: {msg}")


def _publish(store: ImageStore, w: _Worker) -> None:
    assert w.result is not None
    if w.result["blob"]:
        store.blobs.publish(w.blob_tmp, w.layer.digest)
    store.add_layer_dir(w.diff_id, w.tmpd, w.result["size"])


def _cleanup(w: _Worker) -> None:
    shutil.rmtree(w.tmpd, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(w.blob_tmp)


def _spawn(
    store: ImageStore,
    client: RegistryClient,
    repo: str,
    layer: Descriptor,
    diff_id: str,
    libc: Any,
    inherited: list[int],
) -> _Worker:
    tmpd = tempfile.mkdtemp(prefix=f"layer-{os.getpid()}-", dir=store.blobs.tmp_dir)
    blob_tmp = store.blobs.tmp_path()
    r, wfd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(lambda out: _job(store, client, repo, layer, diff_id, tmpd, blob_tmp, out),
               wfd, [r, *inherited], parent, libc)  # fmt: skip
    os.close(wfd)
    return _Worker(pid, r, layer, diff_id, tmpd, blob_tmp)


def _child(job: Callable[[_Pipe], dict[str, Any]], wfd: int, close: list[int], parent: int,
           libc: Any) -> NoReturn:  # fmt: skip
    """The forked worker: job's result (or its error) goes to the parent over wfd."""
    code = 1
    out = _Pipe(wfd)
    try:
        for fd in close:
            os.close(fd)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)  # the parent cleans up; we just die
        libc.LinuxSyscalls().prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        gc.disable()  # a short life: collecting the parser's garbage cycles costs ~2% of it
        libc.keep_heap()  # reuse the MB-sized buffers' pages instead of faulting in new ones
        out.send("result", job(out))
        code = 0
    except BaseException as e:  # noqa: BLE001 - everything goes to the parent
        with contextlib.suppress(BaseException):
            out.send("error", type(e).__name__, str(e))
    finally:
        os._exit(code)


class _Pipe:
    """The worker's side: ``Progress`` calls (and the outcome) as JSON lines to the parent."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, *msg: Any) -> None:
        b = json.dumps(msg).encode() + b"\n"
        while b:
            b = b[os.write(self.fd, b) :]

    def start(self, key: str, total: int) -> None:
        self.send("start", key, total)

    def advance(self, key: str, n: int) -> None:
        self.send("advance", key, n)

    def done(self, key: str, status: str) -> None:
        self.send("done", key, status)

    def message(self, text: str) -> None:
        self.send("message", text)


def _job(store: ImageStore, client: RegistryClient, repo: str, layer: Descriptor, diff_id: str,
         tmpd: str, blob_tmp: str, out: _Pipe) -> dict[str, Any]:  # fmt: skip
    """In the worker: the layer into tmpd (and its blob into blob_tmp), verified."""
    client.after_fork()
    comp = layer_compression(layer.media_type)
    if store.blobs.has(layer.digest):
        with open(store.blobs.path(layer.digest), "rb") as f:
            src = HashReader(f)
            got, size, _ = unpack_layer(src, tmpd, comp)
            src.drain()
        if src.digest != layer.digest:
            raise ImageError(f"blob {layer.digest}: stored content is corrupt")
        _check_diff_id(layer, got, diff_id)
        return {"size": size, "blob": False, "status": "unpacked from store"}
    out.start(layer.digest, layer.size)

    def fetch_once() -> int:
        """The layer from the registry: blob and unpacked tree in one pass, both verified."""
        with store.blobs.writer(layer.digest, layer.size, tmp=blob_tmp) as w:
            resp = client.blob_stream(repo, layer.digest)
            try:

                def sink(b: bytes) -> None:
                    w.write(b)
                    out.advance(layer.digest, len(b))

                # the blob writer hashes the compressed bytes; no second hash here
                src = IterReader(resp.iter_raw(BUF), sink=sink)
                try:
                    got, size, _ = unpack_layer(src, tmpd, comp)
                except ImageError as e:
                    src.drain()
                    if w.digest != layer.digest:
                        raise ImageError(
                            f"layer {layer.digest}: digest mismatch (got {w.digest})"
                        ) from e
                    raise ImageError(f"layer {layer.digest}: {e}") from e
                src.drain()
            finally:
                resp.close()
            if w.digest == layer.digest:
                _check_diff_id(layer, got, diff_id)
            w.finish()  # raises on digest or size mismatch, removing the temp blob
        return size

    for attempt in range(client.retries + 1):
        try:
            size = fetch_once()
            return {"size": size, "blob": True, "status": "pull complete"}
        except (httpx.TransportError, ImageError) as e:
            # a connection lost mid-body starts that layer again, from a clean directory
            transient = isinstance(e, httpx.TransportError) or isinstance(
                e.__cause__, httpx.TransportError
            )
            if not transient or attempt == client.retries:
                if isinstance(e, httpx.TransportError):
                    raise RegistryError(f"layer {layer.digest}: {e}") from e
                raise
            out.message(f"{layer.digest[7:19]}: connection lost ({e}); retrying")
            shutil.rmtree(tmpd)
            os.mkdir(tmpd, 0o700)
    raise AssertionError("unreachable")


def _check_diff_id(layer: Descriptor, got: str, diff_id: str) -> None:
    if got != diff_id:
        raise ImageError(
            f"layer {layer.digest}: uncompressed digest {got} does not "
            f"match the config's diff_id {diff_id}"
        )
