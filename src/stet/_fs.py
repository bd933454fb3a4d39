"""What kind of filesystem a store lives on (local disks allow SQLite's WAL mode)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["filesystem_type", "is_local_filesystem"]

#: Filesystems known to be local to this machine, where shared memory between processes
#: (which SQLite's WAL mode needs) works. Anything else, or unknown, counts as network.
LOCAL_TYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "f2fs", "jfs",
    "reiserfs", "bcachefs", "ramfs", "apfs", "hfs", "hfsplus", "ufs", "vfat", "exfat",
    "ntfs", "ntfs3",
})


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type of the filesystem holding ``path`` (``None`` if it cannot be told)."""
    target = os.path.realpath(Path(path).parent if not os.path.isdir(path) else path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) < 5 or not right:
            continue
        mount = _unescape(parts[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, right.split()[0]
    return best_type


def is_local_filesystem(path: str | os.PathLike[str]) -> bool:
    """True only when ``path`` is known to be on a local filesystem."""
    return filesystem_type(path) in LOCAL_TYPES
