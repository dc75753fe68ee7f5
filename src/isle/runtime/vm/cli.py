"""isle-vm-runtime: runc's command line (create/start/state/kill/delete/run/exec/...) over microVMs.

Errors exit 1 with the message on stderr (and appended to --log), like runc; `run` exits with the
guest program's own exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["main", "DEFAULT_ROOT"]

DEFAULT_ROOT = "/run/isle-vm-runtime"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="isle-vm-runtime", description="OCI runtime: bundles in microVMs"
    )
    ap.add_argument("--root", default=os.environ.get("ISLE_VM_RUNTIME_ROOT", DEFAULT_ROOT))
    ap.add_argument("--log", default="")
    ap.add_argument("--log-format", default="text")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--systemd-cgroup", action="store_true")
    ap.add_argument("--rootless", default="false")
    ap.add_argument("-v", "--version", action="version", version="isle-vm-runtime 0.1.0")
    sub = ap.add_subparsers(dest="verb", required=True)
    for verb in ("create", "run"):
        p = sub.add_parser(verb)
        p.add_argument("-b", "--bundle", default=".")
        p.add_argument("--pid-file", default=None)
        p.add_argument("--console-socket", default=None)
        p.add_argument("--no-pivot", action="store_true")
        p.add_argument("--no-new-keyring", action="store_true")
        p.add_argument("--preserve-fds", type=int, default=0)
        if verb == "run":
            p.add_argument("-d", "--detach", action="store_true")
            p.add_argument("--keep", action="store_true")
        p.add_argument("id")
    for verb in ("start", "state"):
        sub.add_parser(verb).add_argument("id")
    p = sub.add_parser("kill")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="SIGTERM")
    p = sub.add_parser("delete")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("id")
    p = sub.add_parser("list")
    p.add_argument("-f", "--format", default="table")
    p.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("features")
    p = sub.add_parser("spec")
    p.add_argument("-b", "--bundle", default=".")
    p.add_argument("--rootless", action="store_true")
    p = sub.add_parser("exec")
    p.add_argument("--cwd", default=None)
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user", default=None)
    p.add_argument("-p", "--process", default=None)
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--pid-file", default=None)
    p.add_argument("--console-socket", default=None)
    p.add_argument("-c", "--cap", action="append", default=[])
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("-g", "--additional-gids", action="append", default=[])
    p.add_argument("id")
    p.add_argument("args", nargs=argparse.REMAINDER)
    for verb in ("pause", "resume"):
        sub.add_parser(verb).add_argument("id")
    p = sub.add_parser("ps")  # runc's: the guest's processes of the container
    p.add_argument("-f", "--format", default="table", choices=("table", "json"))
    p.add_argument("id")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)
    sub.add_parser("stats").add_argument("id")  # isle's: the guest's memory/cpu/pids + QEMU PSS
    for verb in ("events", "update", "checkpoint", "restore"):
        p = sub.add_parser(verb)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def parse_signal(s: str) -> int:
    from isle.sys.signals import parse

    return parse(s)


def _features() -> dict[str, Any]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": [],
        "mountOptions": ["ro", "nosuid", "nodev", "noexec", "mode", "size"],
        "linux": {
            "namespaces": [],
            "capabilities": [],
            "cgroup": {"v1": False, "v2": False},
            "seccomp": {"enabled": False},
        },
        "annotations": {"org.isle.isolation": "vm", "org.isle.vm.isolation": "microvm (QEMU)"},
    }


def _pod_container(bundle: str) -> bool:
    """config.json is a CRI pod's container (not its sandbox): it runs in the pod's VM."""
    from isle.runtime.vm.pod import role

    try:
        with open(os.path.join(bundle, "config.json")) as f:
            ann = json.load(f).get("annotations") or {}
    except (OSError, ValueError, AttributeError):
        return False  # (create reports the bundle's problem)
    return isinstance(ann, dict) and role(ann)[0] == "container"


def _dispatch(a: argparse.Namespace) -> int:
    from isle.config import default_settings
    from isle.errors import InvalidState, Unsupported
    from isle.runtime.vm import pod, runner
    from isle.runtime.vm import state as st

    settings = default_settings()
    if a.verb in ("create", "run") and _pod_container(a.bundle):  # runs in its pod's VM
        if a.verb == "run" and not a.detach:
            raise Unsupported("run: a pod's container runs detached (create, start) in its pod")
        pod.create(a.id, a.bundle, a.root, a.pid_file)
        if a.verb == "run":
            pod.start(a.id, a.root)
        return 0
    if a.verb in ("start", "kill", "delete", "ps", "pause", "resume", "stats") \
            and pod.member_of(a.root, a.id):
        if a.verb in ("pause", "resume", "stats"):
            raise Unsupported(f"{a.verb}: not supported for a container of a VM pod "
                              "(its processes are the pod VM's)")
        if a.verb == "start":
            pod.start(a.id, a.root)
        elif a.verb == "kill":
            pod.kill(a.id, a.root, parse_signal(a.signal))
        elif a.verb == "delete":
            pod.delete(a.id, a.root, a.force)
        else:
            print(json.dumps(pod.pids(a.id, a.root)) if a.format == "json" else
                  "\n".join(["PID", *map(str, pod.pids(a.id, a.root))]))
        return 0
    if a.verb == "run":
        if a.detach:
            runner.create(a.id, a.bundle, a.root, settings, a.pid_file, a.console_socket)
            runner.start(a.id, a.root)
            return 0
        return runner.run(a.id, a.bundle, a.root, settings, a.pid_file, a.console_socket)
    if a.verb == "create":
        runner.create(a.id, a.bundle, a.root, settings, a.pid_file, a.console_socket)
    elif a.verb == "start":
        runner.start(a.id, a.root)
    elif a.verb == "state":
        print(json.dumps(st.load(a.root, a.id).oci(), indent=2))
    elif a.verb == "kill":
        runner.kill(a.id, a.root, parse_signal(a.signal), all=a.all)
    elif a.verb == "delete":
        runner.delete(a.id, a.root, a.force)
    elif a.verb == "list":
        states = [st.load(a.root, i) for i in st.list_ids(a.root)]
        if a.quiet:
            print("\n".join(s.id for s in states))
        elif a.format == "json":
            print(json.dumps([s.oci() for s in states]))
        else:
            print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
            for s in states:
                print(f"{s.id:<20} {s.pid:<8} {s.status:<10} {s.bundle:<40} {s.created}")
    elif a.verb == "pause":
        runner.pause(a.id, a.root)
    elif a.verb == "resume":
        runner.resume(a.id, a.root)
    elif a.verb == "features":
        print(json.dumps(_features(), indent=2))
    elif a.verb == "spec":
        from isle.oci.runtime_spec import default_spec

        path = os.path.join(a.bundle, "config.json")
        if os.path.exists(path):
            raise InvalidState(f"File {path} exists. Remove it first")
        spec = default_spec(rootless=a.rootless)
        spec.setdefault("annotations", {})["org.isle.isolation"] = "vm"
        with open(path, "w") as f:
            json.dump(spec, f, indent=2)
    elif a.verb == "exec":
        return _exec(a)
    elif a.verb == "ps":
        rows = runner.guest_ps(a.id, a.root)
        if a.format == "json":
            print(json.dumps([int(r[0]) for r in rows[1:] if r and r[0].isdigit()]))
        else:
            for r in rows:
                print("{:>6} {:<8} {:>8} {}".format(*r) if len(r) == 4 else " ".join(r))
    elif a.verb == "stats":
        print(json.dumps(runner.guest_stats(a.id, a.root)))
    else:
        raise Unsupported(f"{a.verb}: not supported by the VM runtime")
    return 0


def _exec(a: argparse.Namespace) -> int:
    """runc exec: args (or -p process.json) run beside the container's process, stdio streamed."""
    import dataclasses
    import functools

    from isle.errors import ConfigError
    from isle.oci.runtime_spec import load
    from isle.runtime.vm import pod, runner
    from isle.runtime.vm import spec as vmspec
    from isle.runtime.vm import state as st

    s = st.load(a.root, a.id)
    cfg = load(os.path.join(s.bundle, "config.json"))
    if a.process:
        with open(a.process) as f:
            proc = json.load(f)
        if not isinstance(proc, dict):
            raise ConfigError("process", f"{a.process} does not hold a JSON object")
    elif a.args:
        proc = dict(cfg.get("process") or {}, args=a.args)
    else:
        raise ConfigError("args", "exec needs a command or --process")
    if a.no_new_privs:
        proc["noNewPrivileges"] = True
    if a.additional_gids:
        try:
            gids = [int(g) for arg in a.additional_gids for g in arg.split(",") if g]
        except ValueError:
            raise ConfigError("additional-gids", f"{a.additional_gids!r} are not gids") from None
        user = dict(proc.get("user") or {})
        user["additionalGids"] = list(user.get("additionalGids") or []) + gids
        proc["user"] = user
    if a.cap:  # runc's --cap: added to bounding, effective, permitted (ambient if inheritable)
        caps = {k: list(v) for k, v in ((proc.get("capabilities")
                                         or (cfg.get("process") or {}).get("capabilities")
                                         or {}).items())}
        for k in ("bounding", "effective", "permitted") + (
                ("ambient",) if caps.get("inheritable") is not None else ()):
            caps[k] = list(caps.get(k) or []) + list(a.cap)
        proc["capabilities"] = caps
    tty = a.tty or bool(proc.get("terminal"))
    # the container's seccomp, and its capabilities and rlimits unless the process has its own
    job = vmspec.exec_job(cfg, proc, stdin=runner.stdin_wanted(0) and not tty)
    if tty:
        job = dataclasses.replace(job, terminal=True, stdin=False)
    if a.cwd:
        job = dataclasses.replace(job, cwd=a.cwd)
    if a.env:
        job = dataclasses.replace(job, env=job.env + tuple(a.env))
    if a.user:
        uid, _, gid = a.user.partition(":")
        try:
            job = dataclasses.replace(job, uid=int(uid), gid=int(gid or 0))
        except ValueError:
            raise ConfigError("user", f"{a.user!r} is not uid[:gid]") from None
    tty_fd, restore = -1, None
    if tty:  # the pty's master to --console-socket (runc's way), else our own terminal, raw
        if a.console_socket:
            tty_fd = runner.console(a.console_socket)
        elif os.isatty(0) and not a.detach:
            import termios
            import tty as _tty

            restore = termios.tcgetattr(0)
            _tty.setraw(0)
            tty_fd = 0
        else:
            raise ConfigError("tty", "exec --tty needs --console-socket or a terminal on stdin")
    if pod.member_of(a.root, a.id):  # in its pod's VM, with its root
        run_job = functools.partial(pod.exec_in, a.id, a.root, job)
    else:
        run_job = functools.partial(runner.exec_, a.id, a.root, job)
    if not a.detach:
        try:
            return run_job(tty_fd)
        finally:
            if restore is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, restore)
    # --detach (conmon's way): a daemon streams to our stdio and exits with the process's code;
    # its pid goes to --pid-file so a subreaper waits for it

    def body() -> int:
        try:
            return run_job(tty_fd)
        except Exception as exc:  # reported on the exec's stderr, like runc's
            print(f"isle-vm-runtime: exec: {exc}", file=sys.stderr)
            return 1

    daemon = pod.detached(body)
    if tty_fd >= 0:
        os.close(tty_fd)  # the daemon has its copy
    if a.pid_file:
        from isle.sys.fs import atomic_write

        atomic_write(a.pid_file, str(daemon).encode(), durable=False)
    return 0


def _log(a: argparse.Namespace | None, msg: str) -> None:
    print(f"isle-vm-runtime: {msg}", file=sys.stderr)
    if a is not None and a.log:
        try:
            with open(a.log, "a") as f:
                if a.log_format == "json":
                    f.write(json.dumps({"level": "error", "msg": msg}) + "\n")
                else:
                    f.write(f"level=error msg={msg!r}\n")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    from isle.errors import IsleError

    try:
        a = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _dispatch(a)
    except IsleError as exc:
        _log(a, str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # said where the shim looks (--log), never a bare traceback
        _log(a, f"internal error: {exc!r}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
