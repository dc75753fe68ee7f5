"""cloud-init NoCloud seeds: a 'cidata' ISO (user-data, meta-data) a whole-OS VM reads at boot.

    seed = make_seed(vm_dir, name="deb", user="isle", ssh_keys=[pub], password=pw,
                     hostname="deb", user_data="")        # -> <vm_dir>/seed.iso
    pub = ensure_key(vm_dir)                               # <vm_dir>/id_ed25519{,.pub}

The cloud-config isle writes is JSON (a subset of YAML: no YAML library needed); a user's own
user-data (--cloud-init FILE) travels beside it in a MIME multipart, which cloud-init merges.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile

from isle.errors import CommandError, ConfigError, VMError
from isle.sys import proc

__all__ = ["make_seed", "ensure_key", "check_user", "check_hostname", "read_ssh_key",
           "new_password"]

_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")


def check_user(user: str) -> str:
    if not _USER.match(user) or user == "root":
        raise ConfigError("--user", f"{user!r} is not a valid login name (lower case letters, "
                          "digits, _ and -; not root)")
    return user


def check_hostname(host: str) -> str:
    if not _HOST.match(host):
        raise ConfigError("--hostname", f"{host!r} is not a valid host name")
    return host


def read_ssh_key(arg: str) -> str:
    """--ssh-key: a public key file or the key itself; ConfigError when it is neither."""
    text = arg
    if os.path.exists(arg):
        with open(arg, errors="replace") as f:
            text = f.read()
    keys = [k.strip() for k in text.splitlines() if k.strip() and not k.startswith("#")]
    if not keys or not all(_KEY.match(k) for k in keys):
        raise ConfigError("--ssh-key", f"{arg!r} is not an OpenSSH public key or a file of them")
    return "\n".join(keys)


def ensure_key(d: str) -> str:
    """A key pair kept in d (made once): the public key's text."""
    priv = os.path.join(d, "id_ed25519")
    if not os.path.exists(priv):
        try:
            proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "isle-vm", "-f", priv],
                     timeout=30)
        except CommandError as exc:
            raise VMError(f"could not make an SSH key pair: {exc}") from exc
    with open(priv + ".pub") as f:
        return f.read().strip()


def _multipart(parts: list[tuple[str, str]]) -> str:
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    m = MIMEMultipart()
    for i, (subtype, text) in enumerate(parts):
        t = MIMEText(text, subtype, "utf-8")
        t.add_header("Content-Disposition", "attachment", filename=f"part-{i}")
        m.attach(t)
    return m.as_string()


def _subtype(text: str) -> str:
    first = text.lstrip().split("\n", 1)[0]
    for prefix, sub in (("#cloud-config", "cloud-config"), ("#!", "x-shellscript"),
                        ("#cloud-boothook", "cloud-boothook"), ("#include", "x-include-url")):
        if first.startswith(prefix):
            return sub
    raise ConfigError("--cloud-init", "user-data must start with #cloud-config, #! (a script), "
                      "#cloud-boothook or #include")


def make_seed(d: str, *, name: str, user: str, ssh_keys: list[str], password: str,
              hostname: str, user_data: str = "") -> str:
    """Write <d>/seed.iso (volume id cidata) for a VM named name; its path."""
    cfg = {
        "users": [{
            "name": user,
            "groups": ["sudo"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": False,
            "passwd": _hash(password),  # console login; only the hash goes into the seed
            "ssh_authorized_keys": ssh_keys,
        }],
        "ssh_pwauth": False,
        "preserve_hostname": False,
        "hostname": hostname,
        "manage_etc_hosts": True,
        # the disk is a whole-disk ext4 already sized with room to spare: nothing to grow
        "resize_rootfs": False,
        "growpart": {"mode": "off"},
        "locale": "C.UTF-8",  # always there (en_US.UTF-8, cloud-init's default, is not)
    }
    ours = "#cloud-config\n" + json.dumps(cfg, indent=1) + "\n"
    body = ours if not user_data else _multipart([("cloud-config", ours),
                                                  (_subtype(user_data), user_data)])
    meta = (f"instance-id: isle-{name}-{secrets.token_hex(4)}\n"
            f"local-hostname: {hostname}\n")
    tmp = tempfile.mkdtemp(prefix="seed-", dir=d)
    out = os.path.join(d, "seed.iso")
    try:
        for fn, text in (("user-data", body), ("meta-data", meta)):
            with open(os.path.join(tmp, fn), "w") as f:
                f.write(text)
        mk = proc.which("genisoimage") or proc.which("xorrisofs") or proc.which("mkisofs")
        if not mk:
            raise VMError("no ISO maker for the cloud-init seed: apt-get install genisoimage")
        proc.run([mk, "-quiet", "-output", out + ".tmp", "-volid", "cidata", "-joliet", "-rock",
                  os.path.join(tmp, "user-data"), os.path.join(tmp, "meta-data")], timeout=60)
        os.rename(out + ".tmp", out)
    except CommandError as exc:
        raise VMError(f"could not write the cloud-init seed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(out + ".tmp"):
            os.unlink(out + ".tmp")
    return out


def _hash(password: str) -> str:
    """SHA-512 crypt of password (openssl passwd -6: the stdlib's crypt module is gone)."""
    try:
        r = proc.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode() + b"\n",
                     timeout=30)
    except CommandError as exc:
        raise VMError(f"could not hash the VM's password: {exc}") from exc
    return r.stdout.decode().strip()


def new_password() -> str:
    return secrets.token_urlsafe(12)
