"""A VM pod's shared directory as its guest gets it: read-only at the top and in each container's
entry (guest root cannot rename an entry or plant a symlink where the host makes, mounts or
unmounts the next container's root), while each container's root, bound there by the host after
the VM started, is a read-write mount of its own that reaches the guest's view."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from isle.runtime.vm import pod
from isle.sys import procfs

pytestmark = [pytest.mark.root]


def test_the_guest_view_is_read_only_but_container_roots_in_it_are_not(tmp_path: Path) -> None:
    from isle.sys.libc import MS_BIND, MS_REC, LinuxSyscalls

    root = tmp_path / "state"
    root.mkdir()
    view = pod.setup_sandbox(str(root), "sb")
    d = pod.shared_dir(str(root), "sb")
    try:
        assert os.path.exists(os.path.join(view, ".isle-pod"))
        for attempt in (lambda: os.mkdir(os.path.join(view, "evil")),
                        lambda: os.symlink("/etc", os.path.join(view, "c1"))):
            with pytest.raises(OSError) as e:
                attempt()
            assert e.value.errno == errno.EROFS
        # the host makes a container's entry and binds its root after the VM started
        ctr_root = tmp_path / "rootfs"
        ctr_root.mkdir()
        os.makedirs(os.path.join(d, "c1", "rootfs"))
        LinuxSyscalls().mount(str(ctr_root), os.path.join(d, "c1", "rootfs"), None,
                              MS_BIND | MS_REC)
        seen = os.path.join(view, "c1", "rootfs")
        assert seen in procfs.mountpoints()  # propagated into the guest's view
        with open(os.path.join(seen, "written-by-guest"), "w") as f:
            f.write("x")
        assert (ctr_root / "written-by-guest").read_text() == "x"
        with pytest.raises(OSError) as e:
            os.rename(os.path.join(view, "c1"), os.path.join(view, "c2"))
        assert e.value.errno == errno.EROFS
    finally:
        pod._remove_shared(str(root), "sb")
    left = [m for m in procfs.mountpoints() if m.startswith(str(root))]
    assert left == [] and not os.path.exists(view) and not os.path.exists(d)
