"""The copy fallback: overlay-form layers merged into one directory."""

from __future__ import annotations

import os
import shutil
import stat

from isle.image.tar.whiteout import is_opaque, is_whiteout, xattr, xattr_names

__all__ = ["apply_layers"]

def apply_layers(layer_dirs: list[str], dest: str) -> None:
    """The copy fallback: merge overlay-form layers (lowest first) into ``dest``."""
    for layer in layer_dirs:
        for top, dirs, files in os.walk(layer):
            rel = os.path.relpath(top, layer)
            dtop = dest if rel == "." else os.path.join(dest, rel)
            if rel != "." and is_opaque(top):
                for e in os.listdir(dtop):
                    _rm_at_path(os.path.join(dtop, e))
            for name in sorted(dirs + files):
                s, d = os.path.join(top, name), os.path.join(dtop, name)
                st = os.lstat(s)
                if is_whiteout(st, s):
                    _rm_at_path(d)
                    continue
                try:
                    dst = os.lstat(d)
                    if not (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(dst.st_mode)):
                        _rm_at_path(d)
                except FileNotFoundError:
                    pass
                if stat.S_ISDIR(st.st_mode):
                    os.makedirs(d, exist_ok=True)
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(s), d)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copyfile(s, d, follow_symlinks=False)
                else:
                    os.mknod(d, st.st_mode, st.st_rdev)
                try:
                    os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
                except OSError:
                    pass
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(d, stat.S_IMODE(st.st_mode))
                for x in xattr_names(s):
                    if not x.startswith(("trusted.overlay.", "user.overlay.")):
                        v = xattr(s, x)
                        if v is not None:
                            try:
                                os.setxattr(d, x, v, follow_symlinks=False)
                            except OSError:
                                pass
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _rm_at_path(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
