"""Layer tarballs in and out, safely: unpack into overlayfs form, tar a directory, apply by copy.

Unpacking resolves every parent directory with ``O_PATH|O_NOFOLLOW`` from the layer root, so
no entry can reach outside it: ``..`` entries and hard links out of the tree are dropped, absolute
names are taken relative to the root, and a path through a symlink is refused instead of being
followed. Whiteouts become overlayfs whiteouts (``.wh.x`` -> char device 0/0 ``x``;
``.wh..wh..opq`` -> ``trusted.overlay.opaque=y``), so each layer is a ready overlay lowerdir.
Every dropped entry is listed in ``Unpacker.skipped`` with the reason.

Speed (see bench/pull_bench.py): tar headers are parsed by ``TarStream`` (~11 us of Python per
entry; tarfile's stream mode cost ~50), which slices them from a 1 MB window of the stream and
writes file data straight from it; each regular file costs openat (with its final mode) + write +
futimens + close (chown and fchmod only when the owner, set-id bits or the umask call for
them), and layers unpack in a ``chattr +T`` directory so ext4 puts each in a fresh block group
(see ``spread_subdirs``). A pull unpacks its layers in parallel processes (fetch.py).

The work lives in ``isle.image.tar``: ``stream`` (readers, gunzip, ``TarStream``), ``unpack``,
``pack`` (``tar_dir``), ``apply`` (the copy fallback), ``whiteout``, ``placement``; this module
is the public face the rest of isle imports.
"""

from __future__ import annotations

from isle.image.tar.apply import apply_layers
from isle.image.tar.pack import tar_dir
from isle.image.tar.placement import spread_subdirs
from isle.image.tar.stream import BUF, HashReader, IterReader, TarStream, decompressor
from isle.image.tar.unpack import Unpacker, unpack_layer
from isle.image.tar.whiteout import OPAQUE_XATTR, is_opaque, is_whiteout

__all__ = [
    "Unpacker",
    "unpack_layer",
    "HashReader",
    "IterReader",
    "BUF",
    "decompressor",
    "tar_dir",
    "apply_layers",
    "OPAQUE_XATTR",
    "is_whiteout",
    "is_opaque",
    "spread_subdirs",
    "TarStream",
]
