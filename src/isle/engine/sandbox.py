"""--isolation sandbox: gVisor's runsc driven as an OCI runtime (Debian's `runsc` package).

runsc takes its configuration as global flags on every call (create, start, state, kill, exec,
delete...), so the engine hands the same flags each time:

    --platform=ptrace   where KVM is unusable (isle.vm.accel says why); --platform=kvm otherwise
    --network=none      for --network none (runsc would otherwise copy the links of the netns
                        it is started in, and refuses the host's); with a network the spec names
                        the netns isle made (a path) and runsc copies its links and routes
    --root=DIR          its own state dir beside isle-runtime's (their state files differ)

Keep this module light: it is imported on every start of a runsc container only.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # light: imported on every start of a runsc container
    from typing import Any

    from isle.engine.options import RunOptions

__all__ = ["is_runsc", "runsc_path", "global_args", "runtime_root", "platform", "oci_args", "check"]

NAME = "runsc"


def is_runsc(path: str) -> bool:
    return os.path.basename(path or "") == NAME


def runsc_path() -> str:
    """runsc's absolute path, or Unsupported saying how to install it."""
    from isle.errors import Unsupported
    from isle.sys import proc

    p = proc.which(NAME)
    if p is None:
        raise Unsupported("--isolation sandbox needs gVisor's runsc, which is not installed here "
                          "(Debian: apt-get install runsc)")
    return p


def platform() -> tuple[str, str]:
    """("kvm" | "ptrace", why): runsc's platform on this host (KVM only where QEMU could use it)."""
    from isle.vm import accel

    acc, why = accel.detect()
    return ("kvm", why) if acc == "kvm" else ("ptrace", why)


def runtime_root(runroot: str) -> str:
    """runsc's --root: a directory of its own (isle-runtime's root holds only its own state)."""
    return os.path.join(runroot, NAME, "state")


def global_args(network_mode: str) -> list[str]:
    """The flags before runsc's sub-command, for a container whose network mode is given."""
    args = [f"--platform={platform()[0]}"]
    if network_mode == "none":
        args.append("--network=none")
    elif network_mode == "host":
        args.append("--network=host")
    return args


#: runsc (2022) tells the root netns from others by /proc/sys/net/core/rmem_default existing,
#: which kernels >= 6.x show in every netns: it then refuses the netns isle made ("cannot run
#: with network enabled in root network namespace"). The shim runs runsc in a private mount
#: namespace where /proc/sys/net is an empty read-only tmpfs, so the check sees a non-root netns
#: (netstack, runsc's default network, never reads /proc/sys/net); nothing else changes.
_SHIM = """#!/bin/sh
# isle: runsc with /proc/sys/net hidden (see isle/engine/sandbox.py)
exec {unshare} -m --propagation private /bin/sh -c \
  'mount -t tmpfs -o ro,size=4k,mode=0555 isle-runsc /proc/sys/net && exec "$0" "$@"' {runsc} "$@"
"""


def shim(runroot: str, runsc: str) -> str:
    """The path of the shim running `runsc` (written under the runroot, root-only, once)."""
    from isle.errors import Unsupported
    from isle.sys import proc

    d = os.path.join(runroot, NAME)
    path = os.path.join(d, "runsc-netns")
    unshare = proc.which("unshare")
    if unshare is None:
        raise Unsupported("--isolation sandbox with a network needs unshare (util-linux)")
    text = _SHIM.format(unshare=unshare, runsc=runsc)
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def oci_args(runroot: str, runsc: str, network_mode: str) -> tuple[str, str, list[str]]:
    """(executable, --root, global flags) for driving this container's runsc."""
    exe = runsc if network_mode in ("none", "host") else shim(runroot, runsc)
    return exe, runtime_root(runroot), global_args(network_mode)


def check(opts: RunOptions, rootless: bool) -> None:
    """At create: settle opts.isolation/runtime for gVisor (a --runtime runsc run is a sandbox);
    a clear error where it cannot run."""
    from isle.errors import ConfigError, Unsupported

    rt = opts.runtime or ""
    iso = opts.isolation or ""
    if iso == "sandbox" and rt and not is_runsc(rt):
        raise ConfigError("--runtime", f"--isolation sandbox runs on gVisor's runsc, not {rt!r}")
    if rootless:
        raise Unsupported("--isolation sandbox (gVisor) needs root on this host: runsc's rootless "
                          "mode has no networking or cgroups here")
    if not rt:
        rt = runsc_path()
    opts.runtime = rt
    opts.isolation = "sandbox"


def levels(rootless: bool, vm: dict[str, Any], vm_runtime: bool) -> dict[str, str]:
    """{level: "" where it works here, else why not} for `isle info` (container, sandbox, vm)."""
    from isle.sys import proc

    out = {"container": ""}
    if proc.which(NAME) is None:
        out["sandbox"] = "runsc (gVisor) is not installed (Debian: apt-get install runsc)"
    elif rootless:
        out["sandbox"] = "needs root here (runsc's rootless mode has no networking or cgroups)"
    else:
        out["sandbox"] = ""
    if not vm_runtime:
        out["vm"] = "isle-vm-runtime is not installed"
    elif not vm.get("qemu"):
        out["vm"] = "qemu-system-x86_64 is not installed"
    elif not vm.get("guest_kernel"):
        out["vm"] = vm.get("guest_kernel_error") or "no guest kernel"
    else:
        out["vm"] = ""
    return out


def level_notes(vm: dict[str, Any]) -> dict[str, str]:
    """How each working level runs here (the platform or accelerator and why)."""
    plat, why = platform()
    acc = str(vm.get("accel", "tcg")).upper()
    return {"container": "shared host kernel, namespaces + cgroups + seccomp",
            "sandbox": f"gVisor runsc --platform={plat} ({why})",
            "vm": f"QEMU {acc} ({vm.get('accel_reason', '')})" + (
                ": KVM unusable, emulated" if acc == "TCG" else "")}
