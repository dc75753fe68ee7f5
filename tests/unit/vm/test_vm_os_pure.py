"""Whole-OS VM pieces that need no QEMU: ports, forwards, cloud-init seeds, OVA descriptors,
the guest agent's protocol (against a socket pair playing the agent)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from isle.errors import ConfigError, VMError
from isle.vm import agent, cloudinit, ova
from isle.vm.config import MachineConfig, Nic
from isle.vm.machine import _hostfwd, parse_port
from isle.vm.qemu import argv


def test_publish_specs_and_hostfwd() -> None:
    assert parse_port("8080:80") == "8080:80/tcp"
    assert parse_port("127.0.0.1:8080:80/udp") == "127.0.0.1:8080:80/udp"
    for bad in ("80", "0:80", "99999:22", "a:b", "1:2/sctp", "1:2:3:4"):
        with pytest.raises(ConfigError, match="--publish"):
            parse_port(bad)
    assert _hostfwd(("22/tcp@127.0.0.1", 40123)) == "tcp:127.0.0.1:40123-:22"
    assert _hostfwd(("80/udp", 8080)) == "udp::8080-:80"
    cfg = MachineConfig(name="x", machine="q35", nics=(Nic(id="n", hostfwd=(
        "tcp:127.0.0.1:2222-:22",)),), image_locking=False)
    a = " ".join(argv(cfg))
    assert "user,id=n,hostfwd=tcp:127.0.0.1:2222-:22" in a


def test_names_keys_and_user_data_checks(tmp_path: Path) -> None:
    assert cloudinit.check_user("ops") == "ops"
    for bad in ("root", "Ops", "-x", "a b", ""):
        with pytest.raises(ConfigError, match="--user"):
            cloudinit.check_user(bad)
    with pytest.raises(ConfigError, match="--hostname"):
        cloudinit.check_hostname("bad_host")
    with pytest.raises(ConfigError, match="--ssh-key"):
        cloudinit.read_ssh_key("not a key")
    k = tmp_path / "k.pub"
    k.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0x user@h\n")
    assert cloudinit.read_ssh_key(str(k)).startswith("ssh-ed25519 ")
    with pytest.raises(ConfigError, match="--cloud-init"):
        cloudinit._subtype("users: []\n")
    assert cloudinit._subtype("#cloud-config\n{}") == "cloud-config"
    assert cloudinit._subtype("#!/bin/sh\ntrue") == "x-shellscript"


@pytest.mark.skipif(not shutil.which("genisoimage") or not shutil.which("isoinfo"),
                    reason="needs genisoimage")
def test_seed_iso_carries_the_user_and_a_password_hash(tmp_path: Path) -> None:
    pub = cloudinit.ensure_key(str(tmp_path))
    assert (tmp_path / "id_ed25519").stat().st_mode & 0o077 == 0
    seed = cloudinit.make_seed(str(tmp_path), name="vm1", user="ops", ssh_keys=[pub],
                               password="s3cret", hostname="h1",
                               user_data="#!/bin/sh\necho hi\n")
    label = subprocess.run(["isoinfo", "-d", "-i", seed], capture_output=True, text=True,
                           check=True).stdout
    assert "Volume id: cidata" in label
    ud = subprocess.run(["isoinfo", "-R", "-x", "/user-data", "-i", seed], capture_output=True,
                        text=True, check=True).stdout
    import email

    msg = email.message_from_string(ud)
    assert msg.get_content_type() == "multipart/mixed"
    parts = [p.get_payload(decode=True).decode() for p in msg.get_payload()]
    assert parts[1] == "#!/bin/sh\necho hi\n"
    assert "s3cret" not in parts[0]  # only the hash travels
    cfg = json.loads(parts[0].removeprefix("#cloud-config\n"))
    assert cfg["users"][0]["name"] == "ops" and cfg["users"][0]["passwd"].startswith("$6$")
    assert cfg["users"][0]["ssh_authorized_keys"] == [pub] and cfg["hostname"] == "h1"
    meta = subprocess.run(["isoinfo", "-R", "-x", "/meta-data", "-i", seed],
                          capture_output=True, text=True, check=True).stdout
    assert "local-hostname: h1" in meta and "instance-id: isle-vm1-" in meta


def test_ova_roundtrip_and_bad_archives(tmp_path: Path) -> None:
    disk = tmp_path / "d.vmdk"
    disk.write_bytes(b"KDMV" + b"\0" * 1020)
    out = ova.write(str(tmp_path / "x.ova"), name="web", vcpus=2, memory_mib=1536,
                    vmdk=str(disk), capacity=1 << 30)
    into = tmp_path / "in"
    into.mkdir()
    d = ova.read(out, str(into))
    assert (d["name"], d["vcpus"], d["memory_mib"]) == ("web", 2, 1536)
    assert Path(str(d["disk"])).read_bytes() == disk.read_bytes()
    (tmp_path / "junk.ova").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="junk.ova"):
        ova.read(str(tmp_path / "junk.ova"), str(into))


def _fake_agent(sock: socket.socket, script: dict[str, object]) -> None:
    f = sock.makefile("rb")
    for line in f:
        req = json.loads(line)
        cmd, args = req["execute"], req.get("arguments") or {}
        if cmd == "guest-sync-delimited":
            sock.sendall(b"junk\xff" + json.dumps({"return": args["id"]}).encode() + b"\n")
        elif cmd == "guest-exec":
            script["argv"] = [args["path"], *args["arg"]]
            sock.sendall(json.dumps({"return": {"pid": 7}}).encode() + b"\n")
        elif cmd == "guest-exec-status":
            n = int(script.get("polls", 0)) + 1  # type: ignore[call-overload]
            script["polls"] = n
            st: dict[str, object] = {"exited": n > 2}
            if n > 2:
                st.update(exitcode=3, **{"out-data": base64.b64encode(b"out").decode(),
                                         "err-data": base64.b64encode(b"err").decode()})
            sock.sendall(json.dumps({"return": st}).encode() + b"\n")
        else:
            sock.sendall(json.dumps({"error": {"desc": f"no {cmd}"}}).encode() + b"\n")


def test_agent_exec_protocol(tmp_path: Path) -> None:
    path = str(tmp_path / "qga.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    script: dict[str, object] = {}

    def serve() -> None:
        c, _ = srv.accept()
        with c:
            _fake_agent(c, script)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with agent.Agent(path) as a:
        assert a.exec(["sh", "-c", "x"]) == (3, b"out", b"err")
        with pytest.raises(VMError, match="no guest-frobnicate"):
            a.call("guest-frobnicate")
    assert script["argv"] == ["sh", "-c", "x"]
    srv.close()
    with pytest.raises(VMError, match="guest agent socket"):
        agent.Agent(str(tmp_path / "none.sock"))
