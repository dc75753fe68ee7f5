"""The engine's hook for --isolation vm at spec time, kept apart from vms.py (which imports the
full-OS machine code) so that `isle run --isolation vm` imports only what it needs."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from isle.config import Settings

__all__ = ["annotate", "TEMPLATE_ANNOTATION"]

TEMPLATE_ANNOTATION = "org.isle.vm.template"
#: set while `isle vm template create` runs its container: {"image": ..., then "key": ...}
_MAKING: dict[str, Any] = {}


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def annotate(settings: Settings, spec: dict[str, Any], bundle: str, image_id: str = "") -> None:
    """Engine hook for --isolation vm: name the rootfs by its image (no tree walk to find its
    disk), and use a template when one matches (image, kernel, size).

    The match is exact: the key the runtime would restore (vm.snapshot.key of the same Boot).
    """
    ann = spec.setdefault("annotations", {})
    upper = os.path.join(bundle, "upper")
    # overlay with nothing of the container's own yet: the rootfs IS the image (else the runtime
    # digests the merged tree, so a file added by `isle cp` before start reaches the disk)
    if image_id and os.path.isdir(upper) and not os.listdir(upper):
        ann["org.isle.vm.rootfs-key"] = image_id.removeprefix("sha256:")[:40]
    env = "" if _MAKING else os.environ.get("ISLE_VM_TEMPLATE", "")
    if ann.get(TEMPLATE_ANNOTATION, env) in ("false", "0"):
        return  # a cold boot asked for (the runtime reads the same annotation, then env)
    d = os.path.join(settings.cache, "templates")
    if not _MAKING and not any(n.endswith(".json") for n in _listdir(d)):
        return  # no template at all: leave the disk digest to the runtime (cold path cost)
    from isle.engine.runtimes import vm_boot
    from isle.errors import IsleError
    from isle.vm import snapshot
    try:
        boot = vm_boot(settings, spec, bundle)
    except IsleError:
        return  # the runtime reports it with the container's own error
    key = snapshot.key(boot)
    if _MAKING:
        _MAKING["key"] = key
        ann[TEMPLATE_ANNOTATION] = "true"
        os.makedirs(d, exist_ok=True)
        from isle.sys.fs import atomic_write

        label = {"image": _MAKING["image"], "memory_mib": boot.memory_mib, "vcpus": boot.vcpus,
                 "net": boot.net, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write(os.path.join(d, f"{key}.json"), json.dumps(label).encode())
    elif os.path.isfile(os.path.join(d, key, "vmstate")) and os.path.exists(
            f"/dev/shm/isle-tpl-{key}.ram"):
        ann[TEMPLATE_ANNOTATION] = "true"
