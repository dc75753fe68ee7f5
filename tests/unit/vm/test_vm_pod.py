"""The pieces of VM-isolated pods that need no VM: the CRI roles and a pod container's guest
script (runtime.vm.pod, vm.job.render_pod)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

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
    assert text.rstrip().endswith('echo "xexit 3 $code" >&3; rm -f /x3.pid')
    assert f"umount -l {root}" in text
    # no derived files: execs wait for and join the process pod_ctr names, xkill reads it too
    assert ".cpid" not in text and ".root" not in text


def test_render_pod_mounts_the_sandbox_share_by_its_tag() -> None:
    text = vmjob.render_pod(vmjob.Job(args=("true",)), 1, "c1", (), "isle2")
    assert f"mount -t virtiofs isle2 {vmjob.POD_DIR}" in text
    assert f"virtiofs {vmjob.POD_TAG} " not in text


def test_the_sandbox_share_is_the_vms_not_the_sandbox_process(tmp_path: Path) -> None:
    """sandbox_config adds the pod's share to the config the VM is prepared from (its tag
    noted for the containers), leaves the caller's config as it was, and to_job keeps it out of
    the sandbox's own process, so the job rendered from that config is the sandbox's alone."""
    from isle.runtime.vm import spec as vmspec

    vol = tmp_path / "vol"
    vol.mkdir()
    cfg = {"process": {"args": ["/pause"]},
           "mounts": [{"type": "bind", "source": str(vol), "destination": "/v"}]}
    view = tmp_path / "view"
    view.mkdir()
    (tmp_path / "sb").mkdir()
    with mock.patch.object(pod, "setup_sandbox", return_value=str(view)):
        out = pod.sandbox_config(str(tmp_path), "sb", cfg)
    assert len(cfg["mounts"]) == 1
    assert [(t, d) for t, _, d, _ in vmspec.shares_of(out)] == [("isle0", "/v"),
                                                                ("isle1", vmspec.POD_SHARE)]
    assert pod.pod_tag(str(tmp_path), "sb") == "isle1"
    assert [m.destination for m in vmspec.to_job(out).mounts] == ["/v"]


def test_guest_agent_takes_xkill() -> None:
    text = vmjob.render(vmjob.Job(args=("/pause",)))
    assert "xkill)" in text and '/x$a.kill' in text
    assert f'read -r cp < "{vmjob.pod_ctr("$d")}"' in text  # xkill SLOT SIG CID


def test_pod_vm_cmdline_asks_for_its_slots() -> None:
    from isle.vm.microvm import EXEC_SLOTS, cmdline

    assert "isle.slots" not in cmdline("erofs", None)
    assert f"isle.slots={pod.POD_SLOTS}" in cmdline("erofs", None, slots=pod.POD_SLOTS)
    assert pod.POD_SLOTS > EXEC_SLOTS and 5 + 3 * pod.POD_SLOTS < 31  # virtio-serial's ports
