"""A VM container's files from the host, through its guest: tar streams out of and into the
container's root, its writable layer (the overlay upper) and its whole root filesystem.

The writable layer is a host file (vm.disk.upper_image, the guest's /dev/vdb), but the host never
mounts it: it is a filesystem image the guest wrote, untrusted input for the host kernel's ext4
parser. So every operation is a small busybox script the guest runs:

- a running container: on a free exec slot (control.exec_ with a script), while it runs, so a
  file copied in is there for its processes at once and what comes out is what they see;
- a stopped one (or one whose runtime state is gone): a short maintenance boot of the bundle
  with its writable layer attached (no network, no volumes, no template: the layer is not a
  fresh one), whose job is the script; the guest syncs before it powers off.

Operations (``OPS``); paths resolve inside the container's root (a private mount namespace, the
overlay alone bound at /isle-root, a private tmpfs on its /dev holding busybox, then chroot), so
symlinks and '..' never leave it; exit 2 means not found, 3 the wrong kind (the reason on stderr):

    out PATH                  tar of PATH (its final symlink followed); top entry: PATH's name,
                              or the root's entries for '/' (its /dev is not the container's)
    in DEST ISDIR CONTENTS NAME  the tar on stdin (one top entry 's') placed at DEST, docker cp's
                              rules: into an existing directory as NAME (CONTENTS=1: s's
                              entries), over an existing file, or as a new DEST
    upper                     tar of the overlay upper (whiteouts: char 0/0 entries); busybox
                              tar keeps no xattrs, so its opaque directories (a lower one
                              removed and made again) are named on stderr: 'opaque DIR'
                              (a directory of the upper hiding an entry of the lower it has no
                              whiteout for)
    export                    tar of the container's root filesystem (no /proc, /sys, volumes)
"""

from __future__ import annotations

import os
from typing import Any

from isle.config import Settings
from isle.errors import ConfigError, InvalidState, NotFound, VMError

__all__ = ["OPS", "script", "run_op", "upper_path"]

OPS = ("out", "in", "upper", "export")

#: enter the container's root: "$@" = the in-root script's text, then its arguments
_ENTER = r"""isle_root() {
  busybox unshare -m --propagation private /bin/busybox sh -c '
    s=$1; shift
    mkdir -p /isle-root && mount --bind /newroot /isle-root &&
    mount -t tmpfs -o size=4m,mode=0700 isle /isle-root/dev &&
    cat /bin/busybox > /isle-root/dev/busybox && chmod 0700 /isle-root/dev/busybox &&
    printf "%s" "$s" > /isle-root/dev/op.sh ||
      { echo "cannot enter the container root" >&2; exit 125; }
    exec busybox chroot /isle-root /dev/busybox sh /dev/op.sh "$@"' isle "$@"
}
"""

_OUT = r"""b=/dev/busybox
p=$($b readlink -f "$1") && { [ -e "$p" ] || [ -L "$p" ]; } ||
  { echo "$1: no such file or directory" >&2; exit 2; }
case "$p" in /dev|/dev/*) echo "$1: /dev is the guest's, not the container's" >&2; exit 3;; esac
if [ "$p" = / ]; then
  cd / && set -- && for e in .[!.]* ..?* *; do
    { [ -e "$e" ] || [ -L "$e" ]; } && [ "$e" != dev ] && set -- "$@" "$e"
  done
  exec $b tar -c -f - "$@"
fi
cd "${p%/*}/" && exec $b tar -c -f - "${p##*/}"
"""

_IN = r"""b=/dev/busybox
dest=$1; isdir=$2; contents=$3; name=$4; into=; target=
t=$($b readlink -f "$dest") || { echo "could not find the directory of $dest" >&2; exit 2; }
case "$t" in /dev|/dev/*) echo "$dest: /dev is the guest's, not the container's" >&2; exit 3;; esac
if [ -d "$t" ]; then
  dir=$t; if [ "$contents" = 1 ]; then into=1; else target=${t%/}/$name; fi
elif [ -e "$t" ] || [ -L "$t" ]; then
  [ "$isdir" = 1 ] && { echo "cannot copy a directory to a file: $dest" >&2; exit 3; }
  case "$dest" in */) echo "$dest: not a directory" >&2; exit 3;; esac
  dir=${t%/*}; target=$t
else
  case "$dest" in */) [ "$isdir" = 1 ] ||
    { echo "the destination directory $dest does not exist" >&2; exit 2; };; esac
  dir=${t%/*}; target=$t
  [ -d "${dir:-/}" ] || { echo "could not find the directory of $dest" >&2; exit 2; }
fi
tmp=$($b mktemp -d "${dir:-}/.isle-cp.XXXXXX") || exit 1
trap '$b rm -rf "$tmp"' EXIT
$b tar -x -f - -C "$tmp" || exit 1
if [ -n "$into" ]; then
  $b cp -a "$tmp/s/." "$t/" || exit 1
elif [ -d "$target" ] && [ ! -L "$target" ]; then
  [ -d "$tmp/s" ] || { echo "cannot overwrite the directory $target with a file" >&2; exit 3; }
  $b cp -a "$tmp/s/." "$target/" || exit 1
else
  $b mv -f "$tmp/s" "$target" || exit 1
fi
"""

_UPPER = r"""cd /rw/upper || exit 1
busybox find . -type d | while IFS= read -r d; do
  [ "$d" != . ] && [ -d "/lower/$d" ] && [ ! -L "/lower/$d" ] || continue
  for e in "/lower/$d"/* "/lower/$d"/.[!.]* "/lower/$d"/..?*; do
    { [ -e "$e" ] || [ -L "$e" ]; } || continue
    n=${e##*/}
    [ -e "/newroot/$d/$n" ] || [ -L "/newroot/$d/$n" ] || [ -c "$d/$n" ] ||
      { echo "opaque $d" >&2; break; }
  done
done
exec busybox tar -c -f - .
"""

_EXPORT = r"""busybox unshare -m --propagation private /bin/busybox sh -c '
  mkdir -p /isle-root && mount --bind /newroot /isle-root && cd /isle-root || exit 125
  exec busybox tar -c -f - .'
"""


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def script(op: str, args: tuple[str, ...] = ()) -> str:
    """The guest shell (busybox ash) for op, reading its stdin and writing its stdout/stderr."""
    if op == "out" and len(args) == 1:
        return _ENTER + f"isle_root {_q(_OUT)} {_q(args[0])}\n"
    if op == "in" and len(args) == 4:
        return _ENTER + f"isle_root {_q(_IN)} " + " ".join(_q(a) for a in args) + "\n"
    if op == "upper" and not args:
        return _UPPER
    if op == "export" and not args:
        return _EXPORT
    raise ConfigError("guest files", f"unknown operation {op!r} with {len(args)} arguments")


def upper_path(cfg: dict[str, Any]) -> str:
    """Where a container's writable layer is kept, as config.json says (org.isle.vm.upper: the
    engine's, in the bundle, so it outlives the runtime's state); "" when the runtime keeps it."""
    p = str((cfg.get("annotations") or {}).get("org.isle.vm.upper", ""))
    if p and not os.path.isabs(p):
        raise ConfigError("annotations.org.isle.vm.upper", f"{p!r} is not an absolute path")
    return p


def run_op(cid: str, root: str, settings: Settings, bundle: str, op: str,
           args: tuple[str, ...], in_fd: int, out_fd: int) -> str:
    """Run op on container cid's files: stdin from in_fd (-1: none), its tar on out_fd (a
    write-only file or pipe); what it said on stderr (up to 1 MiB). A running VM does it; else
    (stopped, or no state) a maintenance boot of bundle. NotFound (exit 2), ConfigError (3) or
    VMError with the guest's words."""
    from isle.runtime.vm import state as st

    text = script(op, args)
    try:
        s = st.load(root, cid)
    except (NotFound, FileNotFoundError):
        s = None
    from isle.runtime.vm.pod import role

    if role(s.annotations if s is not None else _annotations(bundle))[0] == "container":
        from isle.errors import Unsupported

        raise Unsupported(f"container {cid} runs in its pod's VM, under the pod's root: its "
                          "files are not reachable as a VM container's")
    import tempfile

    with tempfile.TemporaryFile(prefix="isle-guest-err-") as err:
        if s is not None and s.status == "paused":
            raise InvalidState(f"container {cid} is paused: its guest cannot answer")
        if s is not None and s.status == "running":
            from isle.runtime.vm.control import exec_
            from isle.vm.job import Job

            def on(i: int) -> str:  # render_exec's contract, with the op as the process
                stdin = f'"$x{i}i"' if in_fd >= 0 else "/dev/null"
                return (f"( {text.rstrip()}\n) <{stdin} >\"$x{i}o\" 2>\"$x{i}e\" &\n"
                        f"echo $! > /x{i}.pid\n"
                        f'wait $!; echo "xexit {i} $?" >&3; rm -f /x{i}.pid\n')

            code = exec_(cid, root, Job(args=("isle-guest-files", op), stdin=in_fd >= 0),
                         script=on, fds=(in_fd, out_fd, err.fileno()))
        elif s is not None and s.status == "created":
            raise InvalidState(f"container {cid} is created, not started: its guest runs no job")
        else:
            if s is not None:
                _gone(s)
            code = _offline(bundle, settings, text, in_fd, out_fd, err.fileno())
        err.seek(0)
        said = err.read(1 << 20).decode(errors="replace")
        if code == 0:
            return said
        msg = said.strip().splitlines()
    why = msg[-1] if msg else f"the guest's {op} failed with exit code {code}"
    if code == 2:
        raise NotFound(why)
    if code == 3:
        raise ConfigError("cp", why)
    raise VMError(f"container {cid}: {why}")


def _gone(s: Any, timeout: float = 10.0) -> None:
    """The container's own QEMU has quit (a stopped container's VM powers off after its exit
    report): two VMs must never have its writable layer at once."""
    import time

    from isle.runtime.vm import state as st

    deadline = time.monotonic() + timeout
    while st.pid_alive(s.qemu_pid, s.qemu_start):
        if time.monotonic() > deadline:
            raise InvalidState(f"container {s.id}: its VM is still shutting down")
        time.sleep(0.05)


def _annotations(bundle: str) -> dict[str, str]:
    import json

    try:
        with open(os.path.join(bundle, "config.json")) as f:
            ann = json.load(f).get("annotations") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return ann if isinstance(ann, dict) else {}


def _offline(bundle: str, settings: Settings, text: str, in_fd: int, out_fd: int,
             err_fd: int) -> int:
    """A maintenance boot: the bundle's image disk and writable layer, no network, no volumes,
    cold (the layer is the container's, not a template's fresh one); text is its job."""
    import copy
    from dataclasses import replace

    from isle.oci import runtime_spec
    from isle.runtime.vm.boot import boot_of
    from isle.vm.microvm import MicroVM, host_end, machine_config, short_dir, writable

    cfg = copy.deepcopy(runtime_spec.load(os.path.join(bundle, "config.json")))
    upper = upper_path(cfg)
    if not upper or not os.path.exists(upper):
        raise VMError(f"the container of bundle {bundle} kept no writable layer on the host "
                      "(no org.isle.vm.upper file): nothing to read after it stopped")
    ann = cfg.get("annotations") or {}
    for k in [k for k in ann if k.startswith("org.isle.vm.net")]:
        del ann[k]
    lx = cfg.get("linux") or {}
    lx["namespaces"] = [n for n in lx.get("namespaces") or [] if n.get("type") != "network"]
    boot = replace(boot_of(cfg, bundle, settings), net="", upper=True)
    job = (f"( {text.rstrip()}\n) <\"$inp\" >\"$out\" 2>\"$err\"\ncode=$?\n"
           "sync\numount /newroot/dev /newroot/proc /newroot/sys /newroot/dev/pts "
           "/newroot/dev/shm /newroot/dev/mqueue 2>/dev/null\n"
           "umount /newroot /rw 2>/dev/null\n"
           "echo \"exit $code\" >&3\npoweroff -f\n")
    out, errw = writable(out_fd), writable(err_fd)
    rundir = short_dir()
    vm: MicroVM | None = None
    try:
        (opath, ofds), (epath, efds) = host_end(out), host_end(errw)
        mc = machine_config(boot, rundir, stdout=opath, stderr=epath, stdin_sock=in_fd >= 0,
                            fdsets=ofds + efds, name="isle-files", upper=upper)
        vm = MicroVM(mc, rundir, pass_fds=(out, errw))
        vm.spawn()  # QEMU holds its copies of out and err now
        vm.connect()
        if in_fd >= 0:
            vm.feed_stdin(in_fd)
        vm.expect("ready", 120)
        vm.send_job(job)
        return vm.wait_exit(600)
    finally:
        os.close(out)
        os.close(errw)
        if vm is not None:
            vm.close()
        else:
            os.rmdir(rundir)
