"""``isle-runtime features``: what this runtime supports, in runc's JSON shape."""

from __future__ import annotations

import os

from isle.oci.runtime_spec import CAPABILITIES, HOOK_KINDS, NAMESPACE_TYPES
from isle.runtime.plan import _FLAGS, PROPAGATION_FLAGS

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time on a start path (docs/startup.md)
    from typing import Any

__all__ = ["features"]


def features() -> dict[str, Any]:
    try:
        from isle.runtime import seccomp  # noqa: F401

        has_seccomp = True
    except ImportError:
        has_seccomp = False
    opts = sorted(set(_FLAGS) | set(PROPAGATION_FLAGS) - {"defaults"})
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": list(HOOK_KINDS),
        "mountOptions": opts,
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": has_seccomp,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"]
                if has_seccomp else [],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                              "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]
                if has_seccomp else [],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                          "SCMP_ARCH_AARCH64"] if has_seccomp else [],
            },
            "apparmor": {"enabled": os.path.isdir("/sys/kernel/security/apparmor")},
            "selinux": {"enabled": os.path.exists("/sys/fs/selinux/enforce")},
            "intelRdt": {"enabled": False},
        },
        "annotations": {
            "org.opencontainers.runc.version": "isle-runtime 0.1.0",
            "org.isle.runtime.version": "0.1.0",
        },
    }
