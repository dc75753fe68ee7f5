"""The pieces of VM-isolated pods that need no VM: the CRI roles and a pod container's guest
script (runtime.vm.pod, vm.job.render_pod)."""

from __future__ import annotations

from isle.runtime.vm import pod
from isle.vm import job as vmjob


def test_role_from_cri_annotations() -> None:
    assert pod.role({pod.CONTAINER_TYPE: "sandbox", pod.SANDBOX_ID: "s1"}) == ("sandbox", "s1")
    assert pod.role({pod.CONTAINER_TYPE: "container", pod.SANDBOX_ID: "s1"}) == ("container",
                                                                                  "s1")
    assert pod.role({pod.CONTAINER_TYPE: "other"}) == ("", "")
    assert pod.role(None) == ("", "")


def test_shared_dir_is_outside_the_sandbox_state_dir() -> None:
    d = pod.shared_dir("/run/x", "sb")
    assert d == "/run/x/.pod-sb" and not d.startswith("/run/x/sb/")


def test_render_pod_runs_in_its_own_root_with_its_mounts() -> None:
    job = vmjob.Job(
        args=("sh", "-c", "echo hi"),
        mounts=(*vmjob.STANDARD_MOUNTS[:1],
                vmjob.GuestMount(type="virtiofs", destination="/data", source="isle0"),
                vmjob.GuestMount(type="virtiofs", destination="/dev/shm", source="isle1")),
        files=(("/etc/hosts", "127.0.0.1 localhost\n"),),
    )
    text = vmjob.render_pod(job, 3, "c1", ((0, "/data", True),))
    root = "/pod/c1/rootfs"
    assert f"mount -t virtiofs {vmjob.POD_TAG} {vmjob.POD_DIR}" in text
    assert f"mount --bind {root} {root}" in text
    assert f"inroot {root} /proc && " in text
    assert 'mount -t proc -o nosuid,noexec,nodev proc "$R"' in text
    assert f"inroot {root} /data && " in text
    assert 'mount --bind /pod/c1/m0 "$R" && mount -o remount,bind,ro "$R"' in text
    assert "isle1" not in text  # a share that is not the container's bind is never mounted
    assert f"inroot {root} /etc/hosts && " in text and '> "$R"' in text
    assert f"/bin/isle-exec -r {root} " in text
    assert '>"$x3o" 2>"$x3e"' in text
    # a signal that came first is applied; the slot is reported, and cleaned, at the end
    assert "read -r xs < /x3.kill" in text
    assert text.rstrip().endswith('echo "xexit 3 $code" >&3; rm -f /x3.pid /x3.root')
    assert f"umount -l {root}" in text


def test_guest_agent_takes_xkill() -> None:
    text = vmjob.render(vmjob.Job(args=("/pause",)))
    assert "xkill)" in text and '/x$a.kill' in text


def test_pod_vm_cmdline_asks_for_its_slots() -> None:
    from isle.vm.microvm import EXEC_SLOTS, cmdline

    assert "isle.slots" not in cmdline("erofs", None)
    assert f"isle.slots={pod.POD_SLOTS}" in cmdline("erofs", None, slots=pod.POD_SLOTS)
    assert pod.POD_SLOTS > EXEC_SLOTS and 5 + 3 * pod.POD_SLOTS < 31  # virtio-serial's ports
