"""Container-side paths in cp, export, diff, commit and build COPY/ADD/WORKDIR (review finding 2,
and the path half of finding 3).

The container is root inside and plants symlinks whose targets are *host* paths (absolute paths
under this test's tmp dir), or swaps a directory and such a symlink in a tight loop while the host
works on it (CVE-2018-15664). Every attempt must stay inside the container: the canaries under
tmp_path are never written, and their secret never shows up in anything isle produces.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SECRET = "HOSTSECRET-" + uuid.uuid4().hex
HOSTONLY = "hostonly-" + uuid.uuid4().hex[:8]


def _canary(tmp_path: Path) -> tuple[Path, Path]:
    """A host dir with a secret file and a 'sub' dir with odd metadata, and a host file."""
    d = tmp_path / "canary"
    d.mkdir()
    (d / HOSTONLY).write_text(SECRET)
    (d / "secret").write_text(SECRET)  # the container has its own /w/secret: same name
    (d / "sub").mkdir()
    os.chmod(d / "sub", 0o705)
    os.chown(d / "sub", 4321, 4321)
    f = tmp_path / "canary.txt"
    f.write_text(SECRET)
    return d, f


def _snap(*paths: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for p in paths:
        for top, dirs, files in os.walk(p):
            for n in [top, *(os.path.join(top, x) for x in dirs + files)]:
                st = os.lstat(n)
                data = b""
                if stat.S_ISREG(st.st_mode):
                    data = Path(n).read_bytes()
                out[n] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
        if p.is_file():
            st = os.lstat(p)
            out[str(p)] = (st.st_mode, st.st_mtime_ns, p.read_bytes())
    return out


def _leaked(path: Path) -> bool:
    """Does anything under path (walked without following symlinks) hold the secret?"""
    if not os.path.lexists(path):
        return False
    if path.is_symlink():
        return False
    if path.is_file():
        return SECRET.encode() in path.read_bytes() or HOSTONLY in path.name
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            if HOSTONLY in n:
                return True
            p = os.path.join(top, n)
            if os.path.isfile(p) and not os.path.islink(p):
                if SECRET.encode() in Path(p).read_bytes():
                    return True
    return False


def _export(isle, ref: str) -> bytes:
    cp = subprocess.run(isle.argv("export", ref), capture_output=True, env=isle.env, timeout=120)
    return cp.stdout if cp.returncode == 0 else b""


def _tar_leaks(data: bytes) -> bool:
    if not data:
        return False
    if SECRET.encode() in data or HOSTONLY.encode() in data:
        return True
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    return any(HOSTONLY in n for n in names)


def _store_leaks(root: Path) -> bool:
    """The engine's store (unpacked layers included) holds no copy of the secret.

    The root also holds the running containers' upper dirs and merged rootfs, which the swapping
    container changes while this looks: walked by directory fd (os.fwalk enters a directory only
    if it is still the one listed) and each file opened in its directory with O_NOFOLLOW, so this
    check never follows a symlink swapped in mid-walk to the host canary itself (os.walk and
    joined paths did: upper/w/secret read as the canary's secret, a false leak)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _, _, files, dfd in os.fwalk(root):
        for n in files:
            if HOSTONLY in n:
                return True
            try:  # no device node opened: only what was a regular file when looked at
                if not stat.S_ISREG(os.stat(n, dir_fd=dfd, follow_symlinks=False).st_mode):
                    continue
                fd = os.open(n, flags, dir_fd=dfd)
            except OSError:
                continue  # swapped for a symlink (ELOOP), or gone, since the listing
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_size < 1 << 16:
                    if SECRET.encode() in os.read(fd, 1 << 16):
                        return True
            except OSError:
                pass
            finally:
                os.close(fd)
    return False


def _run(isle, name: str, script: str, *, detach: bool = True) -> None:
    if detach:
        isle("run", "-d", "--name", name, "busybox", "sh", "-c", script)
    else:
        isle("run", "--name", name, "busybox", "sh", "-c", script)


# -- planted symlinks, running container ------------------------------------------------------


def test_cp_in_through_planted_symlinks(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    _run(isle, "cc", "sleep 300")
    isle("exec", "cc", "sh", "-c", f"mkdir -p /d && ln -s {f} /d/file && ln -s {d} /dd && "
         f"ln -s {d}/new /d/dangling && ln -s ../../../../../../{d.relative_to('/')} /rel && "
         f"mkdir -p /t/indir && ln -s {d} /t/indir/sub && ln -s {d} /t/sub")
    before = _snap(d, f)
    host = tmp_path / "in.txt"
    host.write_text("INTRUDER")
    hdir = tmp_path / "indir"
    (hdir / "sub").mkdir(parents=True)
    (hdir / "sub" / "x").write_text("INTRUDER")
    results = [
        isle("cp", str(host), "cc:/d/file", check=False),
        isle("cp", str(host), "cc:/dd/", check=False),
        isle("cp", str(host), "cc:/dd/new", check=False),
        isle("cp", str(host), "cc:/d/dangling", check=False),
        isle("cp", str(host), "cc:/rel/", check=False),
        isle("cp", str(host), "cc:/rel/sub/x", check=False),
        isle("cp", str(hdir), "cc:/dd", check=False),
        isle("cp", str(hdir) + "/.", "cc:/dd/", check=False),
        isle("cp", str(hdir), "cc:/rel/sub", check=False),
        # the copied tree meets a symlink already in the container's destination tree
        isle("cp", str(hdir), "cc:/t/", check=False),
        isle("cp", str(hdir) + "/.", "cc:/t/", check=False),
        isle("cp", str(hdir) + "/sub/.", "cc:/t/indir/sub", check=False),
    ]
    assert _snap(d, f) == before
    for r in results:
        assert r.returncode == 0 or "Error" in r.stderr or "error" in r.stderr, r
    # where the symlink's target exists inside the container, the file lands there
    isle("exec", "cc", "sh", "-c", f"mkdir -p {f.parent} && echo inside > {f}")
    isle("cp", str(host), "cc:/d/file")
    assert isle("exec", "cc", "cat", str(f)).stdout == "INTRUDER"
    assert _snap(d, f) == before
    # a host-side symlink as the source is copied as a symlink, not followed into the container
    (tmp_path / "hostlink").symlink_to("/etc/shadow")
    isle("cp", str(tmp_path / "hostlink"), "cc:/d/")
    assert isle("exec", "cc", "readlink", "/d/hostlink").stdout.strip() == "/etc/shadow"


def test_cp_out_through_planted_symlinks(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    _run(isle, "cc", "sleep 300")
    isle("exec", "cc", "sh", "-c", f"mkdir -p /d/tree && ln -s {f} /d/file && ln -s {d} /dd && "
         f"ln -s {d} /d/tree/link && ln -s ../../../../../../{d.relative_to('/')} /rel")
    out = tmp_path / "out"
    out.mkdir()
    for i, src in enumerate(["/d/file", f"/dd/{HOSTONLY}", "/dd", "/dd/", "/dd/.", "/rel",
                             f"/rel/{HOSTONLY}", "/d", "/d/tree", "/d/tree/link"]):
        dst = out / f"o{i}"
        isle("cp", f"cc:{src}", str(dst), check=False)
        assert not _leaked(dst), src
    assert not _leaked(out)
    # symlinks inside a copied tree stay symlinks (never followed on the host)
    isle("cp", "cc:/d", str(out / "tree"))
    assert (out / "tree" / "tree" / "link").is_symlink()
    assert os.readlink(out / "tree" / "tree" / "link") == str(d)


def test_cp_out_replaces_host_symlinks_left_by_an_earlier_copy(isle, tmp_path: Path) -> None:
    """A first copy brings a container symlink to the host; the container then makes it a
    directory: the second copy must not write through the host-side symlink."""
    d, f = _canary(tmp_path)
    _run(isle, "cc", "sleep 300")
    isle("exec", "cc", "sh", "-c", f"mkdir -p /t && ln -s {d} /t/x")
    before = _snap(d, f)
    out = tmp_path / "out"
    isle("cp", "cc:/t", str(out))
    assert (out / "x").is_symlink()
    isle("exec", "cc", "sh", "-c", "rm /t/x && mkdir /t/x && echo pwned > /t/x/planted")
    isle("cp", "cc:/t/.", str(out), check=False)
    assert _snap(d, f) == before and not (d / "planted").exists()


# -- racing a directory against a symlink ------------------------------------------------------

_SWAP = ("mkdir -p /w && echo inner > /w/secret && while :; do mv /w /w.tmp; ln -s {d} /w; "
         "rm /w; mv /w.tmp /w; done")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_swap_race_cp_and_export(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    before = _snap(d, f)
    host = tmp_path / "in.txt"
    host.write_text("INTRUDER")
    _run(isle, "race", _SWAP.format(d=d))
    time.sleep(0.3)
    out = tmp_path / "out"
    out.mkdir()
    for i in range(50):
        isle("cp", str(host), f"race:/w/x{i}", check=False)
        isle("cp", str(host), "race:/w/sub/", check=False)
        isle("cp", "race:/w/secret", str(out / f"a{i}"), check=False)
        isle("cp", "race:/w", str(out / f"b{i}"), check=False)
        assert not _tar_leaks(_export(isle, "race")), i
        assert _snap(d, f) == before, i
    assert not _leaked(out)
    assert _snap(d, f) == before


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_swap_race_diff_and_commit(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    before = _snap(d, f)
    _run(isle, "race", _SWAP.format(d=d))
    time.sleep(0.3)
    for i in range(25):
        r = isle("diff", "race", check=False)
        assert HOSTONLY not in r.stdout and SECRET not in r.stdout, i
        isle("commit", "--no-pause", "race", f"snap:{i}", check=False)
        assert not _store_leaks(isle.root), i
    assert _snap(d, f) == before


def test_stopped_container_cp_export_commit_diff(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    before = _snap(d, f)
    _run(isle, "ss", f"mkdir -p /w/in && ln -s {d} /dd && ln -s {f} /ff && ln -s {d} /w/in/l "
         f"&& ln -s {d}/sub /w/sub", detach=False)
    host = tmp_path / "in.txt"
    host.write_text("INTRUDER")
    out = tmp_path / "out"
    out.mkdir()
    for i, (src, dst) in enumerate([(str(host), "ss:/dd/"), (str(host), "ss:/ff"),
                                    (str(host), "ss:/w/sub/"), (str(host), "ss:/dd/sub/y"),
                                    ("ss:/dd", str(out / "1")), (f"ss:/dd/{HOSTONLY}", str(out / "2")),
                                    ("ss:/ff", str(out / "3")), ("ss:/w", str(out / "4")),
                                    ("ss:/w/sub/.", str(out / "5"))]):
        isle("cp", src, dst, check=False)
        assert _snap(d, f) == before, (src, dst)
    assert not _leaked(out)
    assert not _tar_leaks(_export(isle, "ss"))
    r = isle("diff", "ss")
    assert HOSTONLY not in r.stdout and "A /dd" in r.stdout
    isle("commit", "ss", "stopped:1")
    assert not _store_leaks(isle.root)
    assert isle("run", "--rm", "stopped:1", "readlink", "/dd").stdout.strip() == str(d)
    assert _snap(d, f) == before


# -- build: COPY / ADD / WORKDIR / --chown through the image's symlinks ----------------------------


def _build(isle, tmp_path: Path, name: str, text: str, files: dict[str, bytes] | None = None):
    ctx = tmp_path / f"ctx-{name}"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(text)
    for k, v in (files or {}).items():
        (ctx / k).write_bytes(v)
    return isle("build", "-t", f"{name}:1", str(ctx), check=False, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_build_paths_stay_in_the_image(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    pw_dir = tmp_path / "hostetc"
    pw_dir.mkdir()
    (pw_dir / "passwd").write_text("user:x:4242:4242::/:/bin/sh\n")
    (pw_dir / "group").write_text("grp:x:4243:\n")
    before = _snap(d, f, pw_dir)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        ti = tarfile.TarInfo("fromtar")
        ti.size = 8
        tf.addfile(ti, io.BytesIO(b"INTRUDER"))
    files = {"file": b"INTRUDER", "archive.tar": tar.getvalue()}
    base = (f"FROM busybox\nRUN ln -s {d} /app && ln -s {pw_dir}/passwd /etc/passwd.x && "
            f"mv /etc/passwd.x /etc/passwd && ln -s {pw_dir}/group /etc/group.x && "
            f"mv /etc/group.x /etc/group\n")
    r = _build(isle, tmp_path, "wd", base + "WORKDIR /app/sub/deeper\nRUN pwd > /pwd\n", files)
    assert r.returncode == 0, r.stderr
    assert isle("run", "--rm", "wd:1", "cat", "/pwd").stdout.strip() == f"{d}/sub/deeper"
    assert _snap(d, f, pw_dir) == before
    r = _build(isle, tmp_path, "cp", base + "COPY file /app/\nCOPY file /app/sub/x/\n"
               "ADD archive.tar /app/\n", files)
    assert r.returncode == 0, r.stderr
    assert _snap(d, f, pw_dir) == before
    out = isle("run", "--rm", "cp:1", "sh", "-c",
               f"cat {d}/file {d}/fromtar {d}/sub/x/file; echo; stat -c '%a %u' {d}/sub; "
               f"readlink /app").stdout.split()
    # followed inside the image (Docker's COPY semantics); the host dir's 705/4321 never read
    assert out == ["INTRUDERINTRUDERINTRUDER", "755", "0", str(d)]
    # --chown with /etc/passwd and /etc/group symlinked to host files: never read on the host
    r = _build(isle, tmp_path, "own", base + "COPY --chown=user:grp file /owned\n", files)
    assert r.returncode != 0 and "user" in r.stderr
    r = _build(isle, tmp_path, "own2", base + "COPY --chown=0:grp file /owned\n", files)
    assert r.returncode != 0 and "grp" in r.stderr
    # a base image whose whole /etc is a symlink to a host dir (made with `isle import`)
    imp = io.BytesIO()
    with tarfile.open(fileobj=imp, mode="w") as tf:
        ti = tarfile.TarInfo("etc")
        ti.type, ti.linkname = tarfile.SYMTYPE, str(pw_dir)
        tf.addfile(ti)
    (tmp_path / "etc.tar").write_bytes(imp.getvalue())
    isle("import", str(tmp_path / "etc.tar"), "etclink:1")
    r = _build(isle, tmp_path, "own3", "FROM etclink:1\nCOPY --chown=user file /owned\n", files)
    if r.returncode == 0:
        from isle.image.store import ImageStore

        img = ImageStore(str(isle.root / "images")).resolve("own3:1")
        assert os.lstat(Path(img.layer_dirs[-1]) / "owned").st_uid != 4242
    else:
        assert "user" in r.stderr
    assert _snap(d, f, pw_dir) == before


def test_build_stage_never_follows_links_an_earlier_source_made(isle, tmp_path: Path) -> None:
    """COPY a/ b/ /out/: a's x -> <host dir> is copied as a symlink; b's x/ is a directory whose
    file must land in the image, not through that symlink on the host."""
    d, f = _canary(tmp_path)
    before = _snap(d, f)
    ctx = tmp_path / "ctx-stage"
    (ctx / "a").mkdir(parents=True)
    (ctx / "a" / "x").symlink_to(d)
    (ctx / "b" / "x").mkdir(parents=True)
    (ctx / "b" / "x" / "planted").write_text("INTRUDER")
    os.chmod(ctx / "b" / "x", 0o700)
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY a b /out/\nCOPY b/x /out/x/\n")
    r = isle("build", "-t", "stage:1", str(ctx), check=False, timeout=300)
    assert _snap(d, f) == before
    assert not (d / "planted").exists() and oct(os.stat(d).st_mode & 0o777) != "0o700"
    assert r.returncode == 0, r.stderr
    from isle.image.store import ImageStore

    img = ImageStore(str(isle.root / "images")).resolve("stage:1")
    assert (Path(img.layer_dirs[0]) / "out" / "x" / "planted").read_text() == "INTRUDER"


def test_cp_into_a_volume_stays_in_the_volume(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    before = _snap(d, f)
    isle("run", "-d", "--name", "vv", "-v", "cpvol:/vol", "busybox", "sleep", "300")
    isle("exec", "vv", "sh", "-c", f"ln -s {d} /vol/l && ln -s ../../../../.. /vol/up && "
         "echo vol > /vol/inside")
    host = tmp_path / "in.txt"
    host.write_text("INTRUDER")
    for dst in ("vv:/vol/l/", "vv:/vol/l/x", f"vv:/vol/up/{d.relative_to('/')}/y",
                "vv:/vol/../vol/l/z"):
        isle("cp", str(host), dst, check=False)
    out = tmp_path / "out"
    out.mkdir()
    for i, src in enumerate(("vv:/vol/l", f"vv:/vol/l/{HOSTONLY}",
                             f"vv:/vol/up/{d.relative_to('/')}/{HOSTONLY}")):
        isle("cp", src, str(out / str(i)), check=False)
    assert _snap(d, f) == before and not _leaked(out)
    isle("cp", str(host), "vv:/vol/")
    assert isle("exec", "vv", "cat", "/vol/in.txt").stdout == "INTRUDER"
    isle("cp", "vv:/vol/inside", str(out / "inside"))
    assert (out / "inside").read_text() == "vol\n"
    isle("rm", "-f", "vv")
    isle("volume", "rm", "cpvol", check=False)


def test_cp_out_makes_no_devices_or_setid_files_on_the_host(isle, tmp_path: Path) -> None:
    _run(isle, "dv", "sleep 300")
    isle("exec", "dv", "sh", "-c", "mkdir /x && cp /bin/busybox /x/suid && chmod 6755 /x/suid && "
         "(mknod -m 666 /x/disk b 8 0 || true) && (mknod -m 666 /x/mem c 1 1 || true) && "
         "mkfifo /x/fifo")
    out = tmp_path / "out"
    isle("cp", "dv:/x", str(out))
    isle("cp", "dv:/x/suid", str(tmp_path / "suid"))
    for p in (out / "suid", tmp_path / "suid"):
        assert os.stat(p).st_mode & 0o6000 == 0
    assert not (out / "disk").exists() and not (out / "mem").exists()
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    r = isle("cp", "dv:/x/disk", str(tmp_path / "disk"), check=False)
    assert not os.path.lexists(tmp_path / "disk") or not stat.S_ISBLK(os.lstat(tmp_path / "disk").st_mode)
    del r


def test_build_copy_from_follows_links_inside_the_source_image(isle, tmp_path: Path) -> None:
    d, f = _canary(tmp_path)
    text = (f"FROM busybox AS src\nRUN mkdir -p /srv/data && echo inimage > /srv/data/f && "
            f"ln -s /srv/data /app && ln -s {d} /hostdir && ln -s {f} /hostfile\n"
            "FROM scratch\nCOPY --from=src /app/f /got\n")
    r = _build(isle, tmp_path, "from", text)
    assert r.returncode == 0, r.stderr
    from isle.image.store import ImageStore

    img = ImageStore(str(isle.root / "images")).resolve("from:1")
    assert (Path(img.layer_dirs[-1]) / "got").read_text() == "inimage\n"
    for src in (f"/hostdir/{HOSTONLY}", "/hostfile", "/hostdir"):
        r = _build(isle, tmp_path, f"from{len(src)}",
                   text.replace("COPY --from=src /app/f /got", f"COPY --from=src {src} /got"))
        assert r.returncode != 0 and "src" in r.stderr
    assert not _store_leaks(isle.root)


# -- the walkers themselves, against a tree swapped by another process ---------------------------


def _swapper(tree: Path, host: Path) -> subprocess.Popen:
    import sys

    code = ("import os\nt, o = {t!r}, {o!r}\nwhile True:\n"
            "    os.rename(t + '/w', t + '/w.tmp'); os.symlink(o, t + '/w')\n"
            "    os.unlink(t + '/w'); os.rename(t + '/w.tmp', t + '/w')\n").format(t=str(tree),
                                                                                  o=str(host))
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.timeout(300)
def test_tar_writer_and_copier_race_a_swapping_tree(tmp_path: Path) -> None:
    from isle.image.layers import tar_dir
    from isle.sys import fdtree

    tree, host = tmp_path / "tree", tmp_path / "host"
    (tree / "w").mkdir(parents=True)
    host.mkdir()
    for i in range(20):
        (tree / "w" / f"f{i}").write_text("inner")
        (host / f"f{i}").write_text(SECRET)
    before = _snap(host)
    src = tmp_path / "src"
    (src / "w").mkdir(parents=True)
    for i in range(20):
        (src / "w" / f"n{i}").write_text("INTRUDER")
    sw = _swapper(tree, host)
    try:
        for k in range(200):
            b = io.BytesIO()
            tar_dir(str(tree), b)  # never raises on a changing tree, never reads the host
            assert SECRET.encode() not in b.getvalue(), k
        for k in range(60):
            out = tmp_path / f"out{k}"
            out.mkdir()
            s, d = (os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in (tree, out))
            try:
                fdtree.copy_into(s, d, keep_owner=True, untrusted=True)  # out of the tree
            finally:
                os.close(s)
                os.close(d)
            assert not _leaked(out), k
            s, d = (os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in (src, tree))
            try:
                try:
                    fdtree.copy_into(s, d, keep_owner=False)  # into the tree
                except OSError as e:  # the copy may fail on a changing tree, never escape
                    assert e.errno in (17, 21, 2, 20, 40), e
            finally:
                os.close(s)
                os.close(d)
            assert _snap(host) == before, k
    finally:
        sw.kill()
        sw.wait()
    assert _snap(host) == before


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exec_user_lookup_never_reads_a_host_passwd(isle, tmp_path: Path) -> None:
    """`exec -u NAME` reads the running container's /etc/passwd: a container swapping it for a
    symlink to a host file must not get a user from the host's file."""
    hostetc = tmp_path / "hostetc"
    hostetc.mkdir()
    (hostetc / "passwd").write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    (hostetc / "group").write_text("hostonly:x:4242:\n")
    _run(isle, "ex", f"cp /etc/passwd /pw.real && while :; do ln -sf {hostetc}/passwd /etc/pw.l; "
         "mv /etc/pw.l /etc/passwd; cp /pw.real /etc/pw.n; mv /etc/pw.n /etc/passwd; done")
    time.sleep(0.3)
    assert isle("exec", "ex", "/bin/busybox", "ls", "/pw.real").returncode == 0  # it runs
    for _ in range(30):
        r = isle("exec", "-u", "hostonly", "ex", "/bin/busybox", "id", "-u", check=False)
        assert "4242" not in r.stdout


def test_cp_keeps_docker_cp_semantics(isle, tmp_path: Path) -> None:
    _run(isle, "sem", "mkdir -p /d/sub && echo f > /d/sub/f && ln -s sub /d/lnk && ln -s /d /dl "
         "&& echo x > /file && sleep 300")
    h = tmp_path / "h"
    (h / "dir" / "in").mkdir(parents=True)
    (h / "dir" / "in" / "a").write_text("a")
    (h / "f.txt").write_text("F")

    def sh(c: str) -> str:
        return isle("exec", "sem", "sh", "-c", c).stdout.strip()

    def cp(a: str, b: str) -> int:
        return isle("cp", a, b, check=False).returncode

    assert cp(str(h / "f.txt"), "sem:/new.txt") == 0 and sh("cat /new.txt") == "F"
    assert cp(str(h / "f.txt"), "sem:/d") == 0 and sh("cat /d/f.txt") == "F"  # into a dir
    assert cp(str(h / "f.txt"), "sem:/nodir/") != 0  # DEST/ must exist
    assert cp(str(h / "f.txt"), "sem:/nodir/x") != 0  # its parent must exist
    assert cp(str(h / "f.txt"), "sem:/file") == 0 and sh("cat /file") == "F"
    assert cp(str(h / "dir"), "sem:/newdir") == 0 and sh("cat /newdir/in/a") == "a"
    assert cp(str(h / "dir"), "sem:/d") == 0 and sh("cat /d/dir/in/a") == "a"
    assert cp(str(h / "dir") + "/.", "sem:/d") == 0 and sh("cat /d/in/a") == "a"
    assert cp(str(h / "dir"), "sem:/file") != 0  # a directory onto a file
    assert cp(str(h / "f.txt"), "sem:/dl/sub/") == 0 and sh("cat /d/sub/f.txt") == "F"
    o = tmp_path / "o"
    o.mkdir()
    assert cp("sem:/file", str(o / "file")) == 0 and (o / "file").read_text() == "F"
    assert cp("sem:/d", str(o / "dd")) == 0 and (o / "dd" / "sub" / "f").read_text() == "f\n"
    assert os.readlink(o / "dd" / "lnk") == "sub"  # a link inside the tree stays a link
    assert cp("sem:/d/sub/.", str(o)) == 0 and (o / "f").read_text() == "f\n"
    assert cp("sem:/dl", str(o / "dl")) == 0 and not (o / "dl").is_symlink()  # followed inside
    assert cp("sem:/nope", str(o)) != 0 and cp("sem:/file", str(o / "nodir") + "/") != 0


def test_workdir_made_at_run_stays_in_the_container(isle, tmp_path: Path) -> None:
    """`run -w DIR` (and an image's WorkingDir) makes a missing DIR, as Docker does: through the
    image's own symlinks it is made inside the container's root, never on the host."""
    d, f = _canary(tmp_path)
    before = _snap(d, f)
    imp = io.BytesIO()
    with tarfile.open(fileobj=imp, mode="w") as tf:
        ti = tarfile.TarInfo("app")
        ti.type, ti.linkname = tarfile.SYMTYPE, str(d)  # an absolute link to a host directory
        tf.addfile(ti)
    (tmp_path / "app.tar").write_bytes(imp.getvalue())
    isle("import", "--change", "WORKDIR /app/made-by-workdir", str(tmp_path / "app.tar"), "wdl:1")
    for args in (["-w", "/app/made-by-w"], []):
        isle("create", *args, "wdl:1", "true", check=False)
    assert _snap(d, f) == before
    assert not (d / "made-by-w").exists() and not (d / "made-by-workdir").exists()
    isle("rm", "-f", *isle("ps", "-aq").stdout.split(), check=False)
