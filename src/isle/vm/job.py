"""A Job: the one process a microVM runs, rendered as the script the guest init sources (pure)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

__all__ = [
    "GuestMount",
    "GuestNet",
    "USER_NET",
    "USER_DNS",
    "Job",
    "render",
    "render_exec",
    "render_pod",
    "pod_ctr",
    "POD_TAG",
    "POD_DIR",
    "premount_script",
    "STANDARD_MOUNTS",
]

#: propagation/bind flags mean nothing inside the guest; everything else goes to mount -o
_DROP = {
    "bind",
    "rbind",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
}
#: filesystems the guest mounts itself: its own, and virtiofs (host directories shared by tag)
GUEST_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "devtmpfs", "virtiofs"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestMount:
    type: str
    destination: str
    source: str = "none"
    options: tuple[str, ...] = ()


#: Docker's proc flags; runc's default spec (no flags) is served by the same stricter mount
_PROC_OPTS = ("nosuid", "noexec", "nodev")

#: mounts the guest makes on /newroot before 'ready' (so a template has them done): runc's and
#: Docker's defaults as to_job maps them; a job asking for exactly one of these skips it, others
#: are unmounted. Every fork+exec saved matters under TCG after a restore (cold translation caches).
STANDARD_MOUNTS = (
    GuestMount(type="proc", destination="/proc", source="proc", options=_PROC_OPTS),
    # a tmpfs, not the guest's devtmpfs (its disk, control ports): isle-exec -d makes the devices
    GuestMount(
        type="tmpfs",
        destination="/dev",
        source="tmpfs",
        options=("nosuid", "strictatime", "mode=755", "size=65536k"),
    ),
    GuestMount(
        type="devpts",
        destination="/dev/pts",
        source="devpts",
        options=("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
    GuestMount(
        type="tmpfs",
        destination="/dev/shm",
        source="shm",
        options=("nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
    ),
    GuestMount(
        type="mqueue",
        destination="/dev/mqueue",
        source="mqueue",
        options=("nosuid", "noexec", "nodev"),
    ),
    GuestMount(
        type="sysfs",
        destination="/sys",
        source="sysfs",
        options=("nosuid", "noexec", "nodev", "ro"),
    ),
)


#: where the guest mounts a virtio-fs share whose directory it binds (TAG/NAME: FsShare.expose)
SHARES = "/.shares"


def _in_root(root: str, dest: str, then: str, what: str) -> str:
    """Shell that resolves dest inside root (init.sh's inroot: "$R"), then runs `then` on "$R";
    a failure says what failed. Never a plain root + dest: the image's symlinks would lead the
    guest's root shell out of the container's root."""
    return (f"{{ inroot {_q(root)} {_q(dest)} && {then}; }}"
            f" || echo {_q(f'isle-init: {what} {dest} failed')}")


def _mkdir_r() -> str:
    return '{ [ -d "$R" ] || mkdir -p "$R"; }'


def _mount_line(m: GuestMount, root: str = "/newroot") -> str:
    opts = [o for o in m.options if o not in _DROP]
    o = f" -o {_q(','.join(opts))}" if opts else ""
    if m.type == "virtiofs" and "/" in m.source:  # the share at SHARES/TAG, its NAME bound
        tag = m.source.split("/", 1)[0]
        at = _q(f"{SHARES}/{tag}")
        ro = ' && mount -o remount,bind,ro "$R"' if "ro" in opts else ""
        src = _q(f"{SHARES}/{m.source}")
        return _in_root(root, m.destination,
                        f"mkdir -p {at} && mount -t virtiofs{o} {_q(tag)} {at}"
                        f' && {_mkdir_r()} && mount --bind {src} "$R"{ro}', "mount")
    return _in_root(root, m.destination,
                    f'{_mkdir_r()} && mount -t {m.type}{o} {_q(m.source)} "$R"', "mount")


def _file_line(root: str, dest: str, text: str) -> str:
    """A file isle writes into the container's root (/etc/hosts...): its directory made, and
    only a regular file replaced (never a FIFO the image left there, which would block)."""
    return _in_root(root, dest,
                    '{ [ -d "${R%/*}" ] || mkdir -p "${R%/*}"; } && { [ ! -e "$R" ] || '
                    f'[ -f "$R" ]; }} && printf \'%s\' {_q(text)} > "$R"', "write")


def premount_script() -> str:
    """What init.sh runs before 'ready' (shipped in the initramfs as /premount.sh)."""
    return "".join(_mount_line(m) + "\n" for m in STANDARD_MOUNTS)


def _key(m: GuestMount) -> tuple[str, str, tuple[str, ...]]:
    opts = tuple(o for o in m.options if o not in _DROP)
    if m.type == "proc" and set(opts) <= set(_PROC_OPTS):
        opts = _PROC_OPTS
    return (m.type, m.destination, opts)


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestNet:
    """eth0's static configuration (the host side made the tap and leased the address)."""

    address: str  # CIDR, e.g. 10.88.0.5/16
    gateway: str = ""
    mac: str = ""
    #: further CIDRs on eth0, its MTU (0: the driver's), routes other than the default (dst, via)
    extra_addresses: tuple[str, ...] = ()
    mtu: int = 0
    routes: tuple[tuple[str, str], ...] = ()


#: QEMU user networking's fixed plan (guest 10.0.2.15, gateway 10.0.2.2, DNS 10.0.2.3)
USER_NET = GuestNet(address="10.0.2.15/24", gateway="10.0.2.2")
USER_DNS = "10.0.2.3"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = ""
    #: (RLIMIT_* number, soft, hard)
    rlimits: tuple[tuple[int, int, int], ...] = ()
    no_new_privs: bool = False
    mounts: tuple[GuestMount, ...] = ()
    #: read stdin from the org.isle.stdin port (else /dev/null)
    stdin: bool = False
    net: GuestNet | None = None
    #: small host files bind-mounted into the container (/etc/hosts, resolv.conf...): copied in
    files: tuple[tuple[str, str], ...] = ()
    #: further isle-exec options applying the rest of the OCI spec in the guest (capabilities,
    #: seccomp, /dev, masked/read-only paths, ...): made by runtime/vm/spec.py, see isle-exec.c
    spec_opts: tuple[str, ...] = ()
    #: process.terminal: run on the guest's /dev/hvc0 (a virtconsole the host relays to its pty)
    #: as the session's controlling terminal; stdout and stderr both go there
    terminal: bool = False
    #: process.consoleSize (rows, columns): the terminal's size before the process starts
    #: (isle-exec -z; Docker sends it so that the first thing a program prints fits)
    console_size: tuple[int, int] = (0, 0)


def _q(s: str) -> str:
    return shlex.quote(s)


#: the guest file naming the container's process once it is in its own root (isle-exec -N); an
#: exec'd process joins that process's namespaces (isle-exec -J)
CTR_PID = "/ctr.pid"


def _exec_argv(job: Job, root: str, ns: tuple[str, ...]) -> list[str]:
    """isle-exec's command line: ROOT for a new container (-N), none when joining one (-J)."""
    x = ["/bin/isle-exec", *(("-r", root) if root else ()), *ns, "-w", job.cwd,
         "-u", str(job.uid), "-g", str(job.gid)]
    if job.additional_gids:
        x += ["-G", ",".join(map(str, job.additional_gids))]
    for res, soft, hard in job.rlimits:
        x += ["-l", f"{res}:{soft}:{hard}"]
    if job.no_new_privs:
        x += ["-n"]
    if job.terminal and min(job.console_size) > 0:
        x += ["-z", "%d:%d" % job.console_size]
    x += job.spec_opts
    for e in job.env:
        x += ["-e", e]
    return x + ["--", *job.args]


def render_exec(job: Job, slot: int, ctr: str = CTR_PID) -> str:
    """A further process in a running VM, on exec slot ports; reports 'xexit SLOT CODE'. It
    joins the namespaces and root of the process ctr names (isle-exec -J): the VM's container's
    (CTR_PID), or a pod container's (pod_ctr)."""
    stdin = f'"$x{slot}i"' if job.stdin else "/dev/null"
    ns = ("-J", ctr)
    if job.terminal:  # the VM's one virtconsole (vm.microvm.machine_config), lent to this exec
        t = "/dev/hvc0"
        return (
            f"n=0; while [ ! -c {t} ] && [ $n -lt 3000 ]; do n=$((n + 1)); usleep 1000; done\n"
            "busybox setsid -c " + " ".join(_q(a) for a in _exec_argv(job, "", ns))
            + f" <{t} >{t} 2>{t} &\n"
            f"echo $! > /x{slot}.pid\n"
            f'wait $!; echo "xexit {slot} $?" >&3; rm -f /x{slot}.pid\n'
        )
    # /xSLOT.pid lives while the process runs and until its exit is reported: the job's end
    # (render) kills what still runs and waits for those reports, so an exec that finished just
    # before the container's process (e.g. the one that told it to stop) still gets its real code
    return (
        " ".join(_q(a) for a in _exec_argv(job, "", ns))
        + f' <{stdin} >"$x{slot}o" 2>"$x{slot}e" &\n'
        f"echo $! > /x{slot}.pid\n"
        f'wait $!; echo "xexit {slot} $?" >&3; rm -f /x{slot}.pid\n'
    )


def render(job: Job) -> str:
    """Shell (busybox ash) init.sh runs: fd 3 is the control port, $out/$err/$inp stdio ports."""
    lines = ["set +e"]
    if job.hostname:
        lines.append(f"echo {_q(job.hostname)} > /proc/sys/kernel/hostname")  # a builtin: no fork
    wanted = [m for m in job.mounts if m.type in GUEST_FS]
    keys = {_key(m) for m in wanted}
    unused = [m for m in STANDARD_MOUNTS if _key(m) not in keys]
    for m in sorted(unused, key=lambda m: len(m.destination), reverse=True):  # deepest first
        lines.append(f'{{ inroot /newroot {_q(m.destination)} && umount "$R"; }} 2>/dev/null')
    standard = {_key(m) for m in STANDARD_MOUNTS}
    for m in wanted:
        if _key(m) not in standard:
            lines.append(_mount_line(m))
    for dest, text in job.files:
        lines.append(_file_line("/newroot", dest, text))
    if job.net is not None:
        n = job.net
        if n.mac:
            lines.append(f"ip link set eth0 address {_q(n.mac)}")
        if n.mtu:
            lines.append(f"ip link set eth0 mtu {int(n.mtu)}")
        lines += [f"ip addr add {_q(a)} dev eth0" for a in (n.address, *n.extra_addresses)]
        lines.append("ip link set eth0 up")
        if n.gateway:
            lines.append(f"ip route add default via {_q(n.gateway)}")
        for dst, via in n.routes:
            lines.append(f"ip route add {_q(dst)} " + (f"via {_q(via)}" if via else "dev eth0"))
    # its own mount and pid namespaces, pivoted; isle-exec says "started" on the control port;
    # a terminal is bound on its /dev/console (-t), as runc binds the pty there
    x = _exec_argv(job, "/newroot", ("-N", CTR_PID, "-A", "3") + (("-t", "/dev/hvc0")
                                                                  if job.terminal else ()))
    # init.sh found the ports: $out, $err, $inp
    if job.terminal:
        lines += [
            "n=0; while [ ! -c /dev/hvc0 ] && [ $n -lt 3000 ]; do n=$((n + 1)); usleep 1000; done",
            "busybox setsid -c " + " ".join(_q(a) for a in x)
            + " </dev/hvc0 >/dev/hvc0 2>/dev/hvc0 &",
        ]
    else:
        lines.append("in=$inp" if job.stdin else "in=/dev/null")
        lines.append(" ".join(_q(a) for a in x) + ' <"$in" >"$out" 2>"$err" &')
    lines += [
        "pid=$!",
        # the guest agent's answers (top, stats): the container's processes are those in its
        # pid namespace (isle-exec -N named its first in CTR_PID); one line each on the control port
        f"isle_mine() {{ read -r cp < {CTR_PID}; ns=$(busybox readlink /proc/$cp/ns/pid);"
        " l=,$(busybox ls -l /proc/[0-9]*/ns/pid 2>/dev/null | busybox awk -v ns=\"$ns\""
        " '$NF == ns {split($(NF - 2), p, \"/\"); printf \"%s,\", p[3]}'); }",
        "isle_ps() { isle_mine; echo \"ps $(busybox ps -o pid,ppid,user,stat,rss,args"
        " | busybox awk -v l=\"$l\" 'NR == 1 || index(l, \",\" $1 \",\")'"
        " | busybox base64 | busybox tr -d '\\n')\"; }",
        "isle_stats() { isle_mine; echo \"stats $(busybox awk '/^MemTotal:/ {t = $2}"
        " /^MemAvailable:/ {a = $2} END {print t, a}' /proc/meminfo)"
        " $(busybox awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat)"
        " $(echo \"$l\" | busybox tr , '\\n' | busybox grep -c .)\"; }",
        '( while read -r c a b d <&3; do case "$c" in',
        "    ps) isle_ps >&3;;",
        "    stats) isle_stats >&3;;",
        '    kill) kill -"$a" "$pid" 2>/dev/null;;',
        # a terminal resized: winsz HVC ROWS COLS (the kernel sends SIGWINCH)
        '    winsz) busybox stty -F "/dev/hvc$a" rows "$b" cols "$d" 2>/dev/null;;',
        '    killall) kill -"$a" -1 2>/dev/null;;',  # every process but init and this reader
        # a pod container's signal (render_pod): xkill SLOT SIG CID: to the first process of
        # its pid namespace (the one pod_ctr(CID) names: as runc signals a container's init;
        # SIGKILL ends the namespace), else to isle-exec; also left in /xSLOT.kill for a process
        # not in its namespace yet (render_pod applies it once that file names the process)
        f'    xkill) echo "$b" > "/x$a.kill"; if read -r cp < "{pod_ctr("$d")}"; then'
        ' kill -"$b" "$cp" 2>/dev/null;'
        ' elif read -r xp < "/x$a.pid"; then kill -"$b" "$xp" 2>/dev/null; fi;;',
        '    exec) echo "$b" | base64 -d > "/x$a.sh" && ( . "/x$a.sh" ) & ;;',
        "  esac; done ) &",
        'wait "$pid"; code=$?',
        # exec'd processes die with the container (as in a pid namespace); their reports go first
        'for f in /x*.pid; do [ -e "$f" ] && read -r xp < "$f" && kill -9 "$xp" 2>/dev/null; done',
        "n=0; while set -- /x*.pid; [ -e \"$1\" ] && [ $n -lt 200 ]; do n=$((n + 1));"
        " usleep 10000; done",
        "sync",  # the writable layer may be a host file (isle.upper=1): on it before poweroff
        'echo "exit $code" >&3',
        "poweroff -f",
    ]
    return "\n".join(lines) + "\n"


def pod_ctr(cid: str) -> str:
    """The guest file naming a pod container's process once in its own namespaces (-N/-J)."""
    return f"/ctr-{cid}.pid"

#: the virtio-fs tag of a pod VM's shared directory and where the guest mounts it: the host
#: bind-mounts each pod container's rootfs (and directory mounts) there (runtime.vm.pod)
POD_TAG = "isle-pod"
POD_DIR = "/pod"


def render_pod(job: Job, slot: int, cid: str, binds: tuple[tuple[int, str, bool], ...] = (),
               tag: str = POD_TAG) -> str:
    """A pod container's process in its pod's running VM, on exec slot ports (Kata's way): its
    root is POD_DIR/<cid>/rootfs (the host's bind mount, seen over the pod's virtio-fs share
    tag, mounted at POD_DIR by the first container),
    bound on itself; the job's own mounts and files under it; binds (n, destination, ro) mount
    POD_DIR/<cid>/m<n> (a host directory the host bound there) at destination. Reports
    'xexit SLOT CODE'; everything mounted under the root goes when the process has ended. The
    process has its own mount and pid namespaces (isle-exec -N, as the VM's container has); the
    VM's network, hostname and IPC are the pod's, shared by its containers (its namespaces)."""
    root = f"{POD_DIR}/{cid}/rootfs"
    r = _q(root)
    lines = [
        "set +e",
        # the share, mounted once (mkdir is the lock between containers starting together)
        # (a template's clone: the share's device is being hot-plugged, ~0.2 s; 10 s at most)
        f"if busybox mkdir {POD_DIR} 2>/dev/null; then n=0; until mount -t virtiofs {_q(tag)}"
        f" {POD_DIR} 2>/dev/null; do n=$((n + 1)); [ $n -gt 1000 ] && {{ busybox rmdir"
        f" {POD_DIR}; echo 'xexit {slot} 125' >&3; exit; }}; usleep 10000; done; fi",
        f"n=0; while [ ! -e {POD_DIR}/.isle-pod ] && [ $n -lt 5000 ]; do n=$((n + 1));"
        " usleep 1000; done",
        f"mount --bind {r} {r} || {{ echo 'isle-init: no root {cid}'; "
        f"echo 'xexit {slot} 125' >&3; exit; }}",
    ]
    dests = {d: (n, ro) for n, d, ro in binds}
    for m in job.mounts:
        if m.destination in dests:
            n, ro = dests[m.destination]
            src = _q(f"{POD_DIR}/{cid}/m{n}")
            lines.append(_in_root(root, m.destination,
                                  f'{{ [ -e "$R" ] || mkdir -p "$R"; }} && mount --bind {src} "$R"'
                                  + (' && mount -o remount,bind,ro "$R"' if ro else ""), "mount"))
        elif m.type in GUEST_FS and m.type != "virtiofs":
            lines.append(_mount_line(m, root))
    for dest, text in job.files:
        lines.append(_file_line(root, dest, text))
    stdin = f'"$x{slot}i"' if job.stdin else "/dev/null"
    ctr = _q(pod_ctr(cid))
    lines += [
        f"rm -f {ctr}",
        " ".join(_q(a) for a in _exec_argv(job, root, ns=("-N", pod_ctr(cid))))
        + f' <{stdin} >"$x{slot}o" 2>"$x{slot}e" &',
        f"xp=$!; echo $xp > /x{slot}.pid",
        # in its own root (seccomp copy written, namespaces made) or gone: execs may come
        f"n=0; while [ ! -e {ctr} ] && [ $n -lt 10000 ] && kill -0 $xp 2>/dev/null; do"
        " n=$((n + 1)); usleep 1000; done",
        f"cp=; read -r cp < {ctr} 2>/dev/null",
        # a signal sent before the pid was known (a stop right after start)
        # (once the process catches it, 2 s at most: a stop right after start must not hit a
        # namespace's first process before its handler is there, which the kernel drops)
        f'if read -r xs < /x{slot}.kill; then n=0; while [ -n "$cp" ] && [ "$xs" != 9 ]'
        ' && [ $n -lt 200 ]; do cg=0; while read -r k v; do [ "$k" = SigCgt: ] && cg=$v; done'
        ' < /proc/$cp/status; [ $(((0x$cg >> (xs - 1)) & 1)) = 1 ] && break; n=$((n + 1));'
        ' usleep 10000; done; kill -"$xs" "${cp:-$xp}" 2>/dev/null; fi',
        'wait "$xp"; code=$?',
        # its namespace goes with its first process; its mounts after
        '[ -n "$cp" ] && kill -9 "$cp" 2>/dev/null',
        f"umount -l {r}",
        f"rm -f /x{slot}.kill {ctr}",
        f'echo "xexit {slot} $code" >&3; rm -f /x{slot}.pid',
    ]
    return "\n".join(lines) + "\n"
