"""Index snapshots: a store's index saved beside it, so that opening a big store reads
16 bytes a run instead of parsing every record.

A process that read a store of at least :data:`MIN_RECORDS` runs saves, when it ends
normally, its index as ``<store>.stet-index`` (the Parquet store: whenever it is folded):
the digest of every run (:mod:`stet._digest`), the count of records per field set, and a
description of the part of the store it covers, which only the store's own reader knows
how to check (for a log file: its device and inode, the length covered, and a CRC-32
of those bytes). A reader whose store still starts with what the snapshot
covers loads it and reads only what follows; any doubt (another file, fewer bytes, other
bytes, a damaged or foreign snapshot, another version of this format) and the snapshot
is ignored: the store is read in full, as if there were none. A snapshot is a cache:
deleting it loses nothing. stet deletes it whenever it rewrites the store.

The file: the digests (16 bytes each, little-endian), then a JSON trailer, the CRC-32
of both (4 bytes), the trailer's length (8 bytes, little-endian) and the magic
:data:`MAGIC`. Nothing in it is evaluated: the trailer is JSON, checked field by field,
and a snapshot whose bytes are not those written (a flipped bit in a digest would lose
that run, in a field name every run of the field set) fails the checksum.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
import zlib
from array import array
from collections.abc import Iterable
from itertools import islice, repeat
from operator import lshift, or_
from pathlib import Path
from typing import Any

from ._index import Index, IndexState
from ._sidecar import index_file, temp_file, temp_files

__all__ = ["MIN_RECORDS", "Saved", "checksum", "load", "save", "stale_enough"]

MAGIC = b"STETIDX2"  # (1: no checksum)
_to_bytes: Any = int.to_bytes  # (mapped over digests: no Python frame per digest)
VERSION = 2
#: Checksum (4 bytes), trailer length (8), :data:`MAGIC` (8).
FOOTER = 20
#: Stores smaller than this open fast enough without a snapshot: none is saved.
MIN_RECORDS = 1000
_CHUNK = 1 << 16  # digests converted at a time (1 MiB of file: small next to the set)


class Saved:
    """A snapshot as loaded: the index's state, what it says of the store, and where its
    digests lie and their CRC-32 (so that the next save can copy them instead of
    converting them, once sure they are still those)."""

    __slots__ = ("crc", "digests", "ino", "state", "store")

    def __init__(self, state: IndexState, store: dict[str, Any], ino: int,
                 digests: int, crc: int = -1) -> None:
        self.state, self.store, self.ino, self.digests = state, store, ino, digests
        self.crc = crc


def checksum(fd: int, end: int) -> int:
    """CRC-32 of the first ``end`` bytes of ``fd`` (about 1 GB/s here: 0.1 s for a
    million CSV records; a cryptographic hash would take three times as long). Not
    Adler-32, as fast here: two digit swaps ("312" to "321", "421" to "412") leave its
    sums as they were, so a store edited so by hand would pass for the one snapshotted."""
    value, at = 0, 0
    while at < end:
        data = os.pread(fd, min(1 << 20, end - at), at)
        if not data:
            return -1
        value = zlib.crc32(data, value)
        at += len(data)
    return value


def stale_enough(index: Index, saved: Saved | None) -> bool:
    """Whether ``index`` is worth saving: it is big enough, and either no snapshot was
    loaded or the records read after it are many (a sixty-fourth of the store: reading
    them at each open would cost more than saving once)."""
    if index.count < MIN_RECORDS:
        return False
    if saved is None or index.added is None:
        return True
    return index.count - saved.state.count >= max(MIN_RECORDS, index.count // 64)


def footer(check: int, trailer: int) -> bytes:
    """The end of a snapshot file: ``check`` (the CRC-32 of all that precedes it), the
    ``trailer``'s length and the magic."""
    return check.to_bytes(4, "little") + trailer.to_bytes(8, "little") + MAGIC


def load(store: Path, digests: bool = True) -> Saved | None:
    """The snapshot beside ``store``, or ``None`` if there is none or it is unreadable.
    ``digests=False``: its trailer alone (what it says of the store), its digests left
    unread, to check it against the store first."""
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the open (a device: not read)
        fd = os.open(index_file(store), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _load(fd, digests)
    except (OSError, ValueError, TypeError, KeyError, OverflowError, MemoryError,
            RecursionError):  # (JSON nested deeper than Python recurses)
        return None
    finally:
        os.close(fd)


def _load(fd: int, read_digests: bool) -> Saved | None:
    st = os.fstat(fd)
    if st.st_size < FOOTER:
        return None
    tail = os.pread(fd, FOOTER, st.st_size - FOOTER)
    if tail[12:] != MAGIC:
        return None
    length = int.from_bytes(tail[4:12], "little")
    if length <= 0 or length > st.st_size - FOOTER:
        return None
    region = st.st_size - FOOTER - length
    text = os.pread(fd, length, region)
    trailer = json.loads(text)
    if not isinstance(trailer, dict) or trailer.get("version") != VERSION:
        return None
    digests, count = trailer["digests"], trailer["records"]
    store = trailer["store"]
    if not (_is_count(digests) and _is_count(count) and isinstance(store, dict)
            and digests * 16 == region and digests <= count):
        return None
    groups: dict[tuple[str, ...], int] = {}
    for names, n in trailer["groups"]:
        if not (_is_names(names) and _is_count(n)):
            return None
        groups[tuple(names)] = n
    nofunc = set()
    for names in trailer["nofunc"]:
        if not _is_names(names) or tuple(names) not in groups:
            return None
        nofunc.add(tuple(names))
    if sum(groups.values()) != count:
        return None
    values: set[int] = set()
    at = 0 if read_digests else region
    check = 0
    while at < region:
        data = os.pread(fd, min(_CHUNK * 16, region - at), at)
        if not data or len(data) % 16:
            return None
        check = zlib.crc32(data, check)
        words = array("Q")
        words.frombytes(data)
        if sys.byteorder != "little":
            words.byteswap()
        # (built from C functions alone: 0.3 s a million digests, where a Python lambda
        # per digest takes twice as long)
        values.update(map(or_, words[0::2], map(lshift, words[1::2], repeat(64))))
        at += len(data)
    # (the digests unread, the caller only checks the store's description; it loads
    # them, and so checks the whole, before using the snapshot)
    if read_digests and zlib.crc32(text, check) != int.from_bytes(tail[:4], "little"):
        return None
    return Saved(IndexState(groups, nofunc, values, count), store, st.st_ino, digests,
                 check if read_digests else -1)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(type(n) is str for n in value)


def save(store: Path, index: Index, description: dict[str, Any],
         previous: Saved | None) -> None:
    """Save ``index`` beside ``store``, described by ``description`` (atomically: a
    temporary file renamed over the old snapshot). ``previous``: the snapshot ``index``
    was loaded from, whose digests are copied as they are when it is still there."""
    target = index_file(store)
    tmp = temp_file(target, os.getpid())
    state = index.state()
    try:
        # Never through what is at that name (a link planted there would have another
        # file truncated and written): removed, then made anew.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666)
        try:
            written = _write_digests(fd, target, index, previous)
            trailer = json.dumps({
                "version": VERSION, "records": state.count, "digests": written,
                "groups": [[list(k), n] for k, n in state.groups.items() if n],
                "nofunc": [list(k) for k in state.nofunc],
                "store": description,
            }, ensure_ascii=False).encode("utf-8", "surrogatepass")
            _write_all(fd, trailer)
            # (read back rather than summed on the way: old digests are copied file to file)
            check = checksum(fd, written * 16 + len(trailer))
            _write_all(fd, footer(check & 0xFFFFFFFF, len(trailer)))
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _remove_leftovers(target)


#: A temporary snapshot older than this (seconds) was left by a process killed while
#: saving; a younger one may be another process's, being written.
_LEFTOVER_AGE = 600.0


def _remove_leftovers(target: Path) -> None:
    """Remove the temporary files of ``target`` that killed savers left (no reader reads
    them, but each is as big as a snapshot)."""
    now = time.time()
    for name in temp_files(target):
        with contextlib.suppress(OSError):
            if now - os.lstat(name).st_mtime > _LEFTOVER_AGE:
                os.unlink(name)


def _write_digests(fd: int, target: Path, index: Index, previous: Saved | None) -> int:
    """Write the index's digests to ``fd``; return how many."""
    if previous is not None and index.added is not None:
        try:
            with open(target, "rb") as old:
                if os.fstat(old.fileno()).st_ino == previous.ino:
                    copied = _copy(old.fileno(), fd, previous.digests * 16)
                    # (the same inode may be another snapshot's since: one saved and
                    # replaced meanwhile freed it; its digests are not these)
                    if (copied == previous.digests * 16
                            and checksum(fd, copied) == previous.crc):
                        return previous.digests + _write_ints(fd, index.added)
        except OSError:
            pass
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
    return _write_ints(fd, index.state().digests)


def _copy(src: int, dst: int, length: int) -> int:
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, done, done)
        except OSError:  # (another file system, an old kernel)
            data = os.pread(src, min(8 << 20, length - done), done)
            n = os.pwrite(dst, data, done) if data else 0
        if n <= 0:
            break
        done += n
    os.lseek(dst, done, os.SEEK_SET)
    return done


def _write_ints(fd: int, values: Iterable[int]) -> int:
    it = iter(values)
    total = 0
    while True:
        batch = list(islice(it, _CHUNK))
        if not batch:
            return total
        _write_all(fd, b"".join(map(_to_bytes, batch, repeat(16), repeat("little"))))
        total += len(batch)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
