"""`run` and `create` without click: the flag table, the parser and the verbs themselves.

`isle run` is timed against runc, podman and Docker, and click costs ~20 ms of it, so a plain
command line is parsed here (same table, same rules as the click command built from it in
cli/container.py: options stop at the image, short flags cluster, -oVALUE and --opt=VALUE);
anything the parser does not understand returns None and click parses it (and reports the error).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RUN_FLAGS", "parse_globals", "parse_run", "do_run", "do_create", "build_options"]

#: (flag names, destination, kind: flag|bool|str|multi|int, default, help)
RUN_FLAGS: list[tuple[tuple[str, ...], str, str, object, str]] = [
    (("-d", "--detach"), "detach", "flag", False,
     "Run in the background and print the container id."),
    (("--rm",), "remove", "flag", False, "Remove the container when it exits."),
    (("-i", "--interactive"), "interactive", "flag", False,
     "Keep stdin open and connect it to the container."),
    (("-t", "--tty"), "tty", "flag", False, "Give the container a pseudo-terminal."),
    (("--sig-proxy",), "sig_proxy", "bool", True,
     "Forward the signals isle gets (TERM, INT, HUP, QUIT, USR1, USR2) to the container."),
    (("--name",), "name", "str", "", "Name the container (default: a random adjective_noun)."),
    (("-e", "--env"), "env", "multi", (),
     "Set an environment variable: KEY=VALUE, or KEY to pass the host's."),
    (("--env-file",), "env_file", "multi", (),
     "Read environment variables from a file (KEY=VALUE lines)."),
    (("-w", "--workdir"), "workdir", "str", "",
     "Working directory inside the container (made if missing)."),
    (("-u", "--user"), "user", "str", "", "Run as USER[:GROUP] (names or numeric ids)."),
    (("--group-add",), "group_add", "multi", (), "Add a supplementary group."),
    (("--entrypoint",), "entrypoint", "str", None,
     "Override the image's ENTRYPOINT (\"\" clears it)."),
    (("-v", "--volume"), "volume", "multi", (),
     "Mount a volume or host path: [SRC:]DEST[:ro|rw|z|Z]."),
    (("--mount",), "mount", "multi", (),
     "Mount with Docker's syntax: type=bind|volume|tmpfs,source=..,target=..[,readonly]."),
    (("--tmpfs",), "tmpfs", "multi", (), "Mount a tmpfs: PATH[:size=..,mode=..]."),
    (("--read-only",), "read_only", "flag", False,
     "Mount the container's root filesystem read-only."),
    (("-m", "--memory"), "memory", "str", "", "Memory limit (e.g. 512m, 1g)."),
    (("--memory-swap",), "memory_swap", "str", "",
     "Memory plus swap limit; -1 for unlimited swap."),
    (("--cpus",), "cpus", "str", "", "Number of CPUs the container may use (e.g. 1.5)."),
    (("-c", "--cpu-shares"), "cpu_shares", "int", 0, "Relative CPU weight (default 1024)."),
    (("--cpuset-cpus",), "cpuset_cpus", "str", "",
     "CPUs the container may run on (e.g. 0-1, 0,2)."),
    (("--pids-limit",), "pids_limit", "int", 0, "Maximum number of processes; -1 for unlimited."),
    (("--ulimit",), "ulimit", "multi", (),
     "Resource limit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048)."),
    (("--cap-add",), "cap_add", "multi", (), "Add a Linux capability (or ALL)."),
    (("--cap-drop",), "cap_drop", "multi", (), "Drop a Linux capability (or ALL)."),
    (("--privileged",), "privileged", "flag", False,
     "Give every capability and every device, no seccomp (dangerous)."),
    (("--security-opt",), "security_opt", "multi", (),
     "seccomp=PROFILE.json|unconfined, no-new-privileges[=true]."),
    (("-h", "--hostname"), "hostname", "str", "", "The container's host name."),
    (("-l", "--label"), "label", "multi", (), "Set a label: KEY=VALUE."),
    (("--init",), "init", "flag", False,
     "Run a small init as PID 1 that reaps zombies and forwards signals."),
    (("--restart",), "restart", "str", "no",
     "Restart policy: no, on-failure[:MAX], always, unless-stopped."),
    (("--stop-signal",), "stop_signal", "str", "SIGTERM", "Signal that stops the container."),
    (("--stop-timeout",), "stop_timeout", "int", 10,
     "Seconds to wait after the stop signal before SIGKILL."),
    (("--health-cmd",), "health_cmd", "str", "",
     "Command that checks the container's health (run by a shell)."),
    (("--health-interval",), "health_interval", "str", "",
     "Time between health checks (e.g. 30s)."),
    (("--health-timeout",), "health_timeout", "str", "", "Time one health check may take."),
    (("--health-retries",), "health_retries", "int", 0,
     "Failures in a row that make it unhealthy."),
    (("--health-start-period",), "health_start_period", "str", "",
     "Grace time after start when failures do not count."),
    (("--no-healthcheck",), "no_healthcheck", "flag", False, "Disable the image's HEALTHCHECK."),
    (("--runtime",), "runtime", "str", "",
     "OCI runtime: isle-runtime (default), runc, crun, runsc, isle-vm-runtime."),
    (("--isolation",), "isolation", "str", "container",
     "container (namespaces), sandbox (gVisor) or vm (a QEMU microVM)."),
    (("--network", "--net"), "network", "str", "",
     "Networks to join: bridge (default), none, host, container:NAME, or names."),
    (("-p", "--publish"), "publish", "multi", (),
     "Publish a port: [IP:][HOSTPORT:]PORT[/tcp|udp]."),
    (("-P", "--publish-all"), "publish_all", "flag", False,
     "Publish every EXPOSEd port on a random host port."),
    (("--ip",), "ip", "str", "", "A fixed IPv4 address on the network."),
    (("--dns",), "dns", "multi", (), "A DNS server for the container's resolv.conf."),
    (("--dns-search",), "dns_search", "multi", (), "A DNS search domain."),
    (("--dns-option", "--dns-opt"), "dns_option", "multi", (),
     "A resolv.conf option (e.g. ndots:2)."),
    (("--network-alias", "--net-alias"), "network_alias", "multi", (),
     "An extra DNS name for the container on its network."),
    (("--add-host",), "add_host", "multi", (), "Add a line to /etc/hosts: HOST:IP."),
    (("--log-opt",), "log_opt", "multi", (),
     "Log option: max-size=SIZE (older output is rotated away)."),
    (("--pull",), "pull", "str", "missing", "Pull the image: missing (default), always, never."),
    (("--tls-verify",), "tls_verify", "bool", True,
     "Verify the registry's TLS certificate when pulling (false: also allow plain HTTP)."),
]

_BY_NAME = {n: (dest, kind) for names, dest, kind, _, _h in RUN_FLAGS for n in names}
_BY_NAME.update({"--no-" + n[2:]: (dest, "nobool") for names, dest, kind, _, _h in RUN_FLAGS
                 if kind == "bool" for n in names})
GLOBALS = {"--root": "root", "--runroot": "runroot", "--runtime-default": "runtime"}
_BOOLS = {"true": True, "1": True, "t": True, "yes": True, "false": False, "0": False, "f": False,
          "no": False}


# -- parsing --------------------------------------------------------------------------------------
def parse_globals(argv: list[str]) -> tuple[dict[str, str], list[str]] | None:
    g: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name not in GLOBALS:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            val = argv[i + 1]
            i += 1
        g[GLOBALS[name]] = val
        i += 1
    return g, argv[i:]


def parse_run(args: list[str]) -> dict[str, object] | None:
    kw: dict[str, object] = {dest: (list(d) if kind == "multi" else d)  # type: ignore[call-overload]
                             for _, dest, kind, d, _h in RUN_FLAGS}
    i = 0

    def put(dest: str, kind: str, val: str) -> bool:
        if kind == "multi":
            lst: list[str] = kw[dest]  # type: ignore[assignment]
            lst.append(val)
        elif kind == "int":
            try:
                kw[dest] = int(val)
            except ValueError:
                return False
        else:
            kw[dest] = val
        return True

    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            if name not in _BY_NAME:
                return None
            dest, kind = _BY_NAME[name]
            if kind in ("flag", "nobool"):
                if eq:
                    return None
                kw[dest] = kind == "flag"
            elif kind == "bool":  # --tls-verify, --tls-verify=false (podman's form)
                if not eq:
                    kw[dest] = True
                elif val.lower() in _BOOLS:
                    kw[dest] = _BOOLS[val.lower()]
                else:
                    return None  # click names the bad value
            else:
                if not eq:
                    if i + 1 >= len(args):
                        return None
                    i += 1
                    val = args[i]
                if not put(dest, kind, val):
                    return None
            i += 1
            continue
        j = 1
        while j < len(a):  # a cluster of short options: -it, -dit, -e K=V, -eK=V, -p80
            opt = "-" + a[j]
            if opt not in _BY_NAME:
                return None
            dest, kind = _BY_NAME[opt]
            if kind == "flag":
                kw[dest] = True
                j += 1
                continue
            val = a[j + 1:]
            if not val:
                if i + 1 >= len(args):
                    return None
                i += 1
                val = args[i]
            if not put(dest, kind, val):
                return None
            break
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    if i >= len(args):
        return None
    kw["image"] = args[i]
    kw["command"] = tuple(args[i + 1:])
    for _, dest, kind, _d, _h in RUN_FLAGS:
        if kind == "multi":
            kw[dest] = tuple(kw[dest])  # type: ignore[arg-type]
    return kw


def normalize_bools(args: list[str], verb: str) -> list[str]:
    """podman's `--tls-verify=false` for click's `--tls-verify/--no-tls-verify` flag pair; for
    run/create only among the options before the image (a container's own argv is left alone)."""
    out = list(args)
    i = out.index(verb) + 1 if verb in out else 0
    run_like = verb in ("run", "create")
    while i < len(out):
        a = out[i]
        if a == "--" or (run_like and not a.startswith("-")):
            break
        name, eq, val = a.partition("=")
        if name in ("--tls-verify", "--sig-proxy") and eq and val.lower() in _BOOLS:
            out[i] = name if _BOOLS[val.lower()] else "--no-" + name[2:]
        elif run_like and not eq and a.startswith("--") and _BY_NAME.get(a, ("", "flag"))[1] \
                in ("str", "multi", "int"):
            i += 1  # its value
        elif run_like and not a.startswith("--") and len(a) > 1:
            for j in range(1, len(a)):  # a short cluster: a value-taking flag ends it
                kind = _BY_NAME.get("-" + a[j], ("", "flag"))[1]
                if kind in ("str", "multi", "int"):
                    i += 1 if j == len(a) - 1 else 0
                    break
        i += 1
    return out


# -- the verbs ------------------------------------------------------------------------------------
def do_run(obj: Any, kw: dict[str, Any]) -> int:
    opts = build_options(kw)
    rep = _pulling(obj, kw, opts.image, lambda: obj.engine.run(opts))
    if opts.detach:
        sys.stdout.write(rep.id + "\n")
        return 0
    return int(rep.exit_code or 0)


def do_create(obj: Any, kw: dict[str, Any]) -> int:
    opts = build_options(kw)
    rep = _pulling(obj, kw, opts.image, lambda: obj.engine.create(opts))
    for w in rep.warnings:
        sys.stderr.write(f"WARNING: {w}\n")
    sys.stdout.write(rep.id + "\n")
    return 0


def _pulling(obj: Any, kw: dict[str, Any], ref: str, fn: Any) -> Any:
    """Docker's client side of `run`/`create`: pull the image first (always), or when the engine
    says it is missing (missing), or never. The engine looks the image up before it makes
    anything, so a retry after the pull starts from nothing."""
    from isle.errors import ConfigError, NotFound

    policy = kw.get("pull") or "missing"
    if policy not in ("missing", "always", "never", "newer"):
        raise ConfigError("--pull", f"invalid pull policy {policy!r} (missing, always, never)")
    if policy == "always":
        pull_image(obj, ref, bool(kw.get("tls_verify", True)))
    try:
        return fn()
    except NotFound as exc:
        if _have_image(obj, ref):  # something else is missing (a network, a container)
            raise exc from None
        if policy == "never":
            raise NotFound(f"No such image: {ref}") from None
        if policy == "always":
            raise
    sys.stderr.write(f"Unable to find image '{ref}' locally\n")
    pull_image(obj, ref, bool(kw.get("tls_verify", True)))
    return fn()


def _have_image(obj: Any, ref: str) -> bool:
    """The image is here, or made offline on first use (busybox from Debian's busybox-static)."""
    from isle.errors import IsleError

    try:
        obj.engine.store.resolve(ref)
    except IsleError:
        return False
    return True


def pull_image(obj: Any, ref: str, tls_verify: bool) -> None:
    """Pull with progress on stderr (a bar per layer on a terminal, lines otherwise)."""
    from isle.cli.images import Progress
    from isle.engine.images import Images

    prog = Progress(verb="downloading")
    try:
        img = Images(obj.settings, store=obj.engine.store).pull(ref, tls_verify=tls_verify,
                                                                 progress=prog)
    finally:
        prog.close()
    digests = [d.split("@", 1)[1] for d in getattr(img, "repo_digests", []) or [] if "@" in d]
    if digests:
        sys.stderr.write(f"Digest: {digests[0]}\n")
    sys.stderr.write(f"Status: Downloaded newer image for {ref}\n")


def build_options(kw: dict[str, Any]) -> Any:
    """Flag values -> RunOptions (every parser names the flag on error)."""
    from isle.engine import options as O
    from isle.errors import ConfigError

    env = dict(os.environ)
    envs: list[str] = []
    for path in kw["env_file"]:
        envs += O.parse_env_file(path, env)
    envs += O.parse_env(list(kw["env"]), env)
    mounts = [O.parse_volume(v) for v in kw["volume"]] + [O.parse_mount(m) for m in kw["mount"]] \
        + [O.parse_tmpfs(t) for t in kw["tmpfs"]]
    seccomp, nnp = "", False
    for so in kw["security_opt"]:
        k, sep, v = so.partition("=")
        if so in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
            nnp = True
        elif so in ("no-new-privileges=false", "no-new-privileges:false"):
            nnp = False
        elif k == "seccomp" and sep and v:
            if v != "unconfined" and not os.path.isfile(v):
                raise ConfigError("--security-opt", f"seccomp profile {v!r} not found")
            seccomp = v if v == "unconfined" else os.path.abspath(v)
        elif k in ("apparmor", "label"):
            pass
        else:
            raise ConfigError("--security-opt", f"invalid option {so!r}")
    hc = None
    if kw["no_healthcheck"]:
        hc = O.Healthcheck(test=["NONE"])
    elif kw["health_cmd"]:
        hc = O.Healthcheck(test=["CMD-SHELL", kw["health_cmd"]])
        if kw["health_interval"]:
            hc.interval = O.parse_duration("--health-interval", kw["health_interval"])
        if kw["health_timeout"]:
            hc.timeout = O.parse_duration("--health-timeout", kw["health_timeout"])
        if kw["health_retries"]:
            hc.retries = kw["health_retries"]
        if kw["health_start_period"]:
            hc.start_period = O.parse_duration("--health-start-period", kw["health_start_period"])
    if kw["pids_limit"] < 0 and kw["pids_limit"] != -1:
        raise ConfigError("--pids-limit", "must be -1 (unlimited) or positive")
    ms = kw["memory_swap"]
    ep = kw["entrypoint"]
    log_max = 0
    for lo in kw["log_opt"]:
        k, _, v = lo.partition("=")
        if k == "max-size":
            log_max = O.parse_bytes("--log-opt max-size", v)
        elif k not in ("max-file", "mode", "tag"):
            raise ConfigError("--log-opt", f"unknown log option {k!r} (max-size)")
    return O.RunOptions(
        image=kw["image"], command=list(kw["command"]), name=kw["name"], detach=kw["detach"],
        remove=kw["remove"], interactive=kw["interactive"], tty=kw["tty"], env=envs,
        sig_proxy=bool(kw.get("sig_proxy", True)),
        workdir=kw["workdir"], user=kw["user"], group_add=list(kw["group_add"]),
        entrypoint=None if ep is None else ([ep] if ep else []), mounts=mounts,
        read_only=kw["read_only"],
        memory=O.parse_bytes("--memory", kw["memory"]) if kw["memory"] else 0,
        memory_swap=-1 if ms == "-1" else (O.parse_bytes("--memory-swap", ms) if ms else 0),
        cpus=O.parse_cpus(kw["cpus"]) if kw["cpus"] else 0.0, cpu_shares=kw["cpu_shares"],
        cpuset_cpus=kw["cpuset_cpus"], pids_limit=max(kw["pids_limit"], 0),
        ulimits=[O.parse_ulimit(u) for u in kw["ulimit"]],
        cap_add=O.check_caps("--cap-add", list(kw["cap_add"])),
        cap_drop=O.check_caps("--cap-drop", list(kw["cap_drop"])),
        privileged=kw["privileged"], seccomp=seccomp, no_new_privileges=nnp,
        hostname=kw["hostname"], labels=O.parse_labels(list(kw["label"])), init=kw["init"],
        restart=O.parse_restart(kw["restart"]), stop_signal=kw["stop_signal"],
        stop_timeout=kw["stop_timeout"], healthcheck=hc, runtime=kw["runtime"],
        isolation=kw["isolation"], network=kw["network"], publish=list(kw["publish"]),
        publish_all=kw["publish_all"], ip=kw["ip"], dns=list(kw["dns"]),
        dns_search=list(kw["dns_search"]), dns_options=list(kw["dns_option"]),
        network_aliases=list(kw["network_alias"]),
        extra_hosts=list(kw["add_host"]), log_max_size=log_max,
        console_size=_terminal_size() if kw["tty"] else [],
    )


def _terminal_size() -> list[int]:
    """[rows, cols] of our terminal: a -t container's pty has it from its first instruction, as
    Docker's CLI sends ConsoleSize (a resize after the start comes too late for `stty size`)."""
    try:
        cols, rows = os.get_terminal_size(0)
    except OSError:
        return []
    return [rows, cols] if rows and cols else []
