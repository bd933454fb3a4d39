"""An append-only file of records, shared safely by threads and processes.

One discipline for every file format (the format is a :class:`~stet._codec.Codec`):

* every append happens under an exclusive lock, as one ``write`` of one whole record,
  after catching up with what other writers appended;
* readers remember the offset just past the last complete record and the file's
  ``stat``; when the ``stat`` is unchanged nothing is read, otherwise only the new tail;
* a torn tail (what an append interrupted by SIGKILL or a full disk leaves: a prefix of
  one record after the last whole one) is ignored by readers and cut off by the next
  writer, with a :class:`StoreWarning`; anything else malformed, anywhere, is a
  :class:`~stet.errors.CorruptStoreError` naming the line, and the file is left as it is;
* whole-file changes (remove, clear, a widened CSV header) write a temporary file,
  ``fsync`` it and ``os.replace`` it over the store, so the store is always whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from time import monotonic
from typing import Any

from . import _fork
from . import _snapshot as saved_index
from ._codec import TEAR_ALIGN, Codec, Damage, Parsed, Record
from ._fork import close_if_ours, pid
from ._index import Index
from ._locking import StoreLock
from ._sidecar import index_file, open_file, temp_file, temp_files
from ._warn import warn
from .errors import CorruptStoreError, StoreError

__all__ = ["LogFile", "StoreWarning", "atomic_write", "store_file"]


class StoreWarning(UserWarning):
    """Something in a store was repaired (e.g. an interrupted write was discarded)."""


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` by a file holding ``data``; readers see the old or the new file.

    The new file keeps the old one's identity as far as a rename allows: its permission
    bits and group (and owner, when stet may set it), and when ``path`` is a symlink, the
    file it points to is replaced and the symlink stays.

    The caller holds the store's exclusive lock, so no other writer is using a temporary
    file of this store: those left by writers killed mid-write are removed. A write that
    fails (a full disk) removes its own and leaves ``path`` as it was.
    """
    path = _target(path)
    tmp = temp_file(path, pid())
    for leftover in temp_files(path):
        with contextlib.suppress(OSError):
            os.unlink(leftover)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    try:
        fd = open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # never through a link
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if old is not None:
                _same_identity(fd, old, path)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StoreError(f"could not rewrite {path}: {exc.strerror or exc}. The store "
                             f"was left as it was; free some space (or fix the "
                             f"permissions) and try again.") from exc
        raise
    if fsync:
        _fsync_dir(path.parent)


def store_file(path: Path | str) -> Path:
    """The file a store path names: ``path``, or the file it leads to when it is a symlink.

    Backends keep their lock, claims and other sidecars beside this file, so processes
    that name one store by different paths (a symlink and its target, two symlinks)
    share them: with sidecars beside each name they would append over each other's
    records and run the same run at once.
    """
    path = Path(path)
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def _target(path: Path) -> Path:
    """The file a rewrite replaces: ``path``, or the file its symlinks lead to."""
    if not os.path.islink(path):
        return path
    return Path(os.path.realpath(path))


def _same_identity(fd: int, old: os.stat_result, path: Path) -> None:
    """Give the new file ``fd`` the old file ``path``'s owner, group, permission bits and
    extended attributes (its access control list among them).

    A group-shared store (0664, group ``lab``) stays shared, a 0444 store stays read-only,
    one shared with named users by an ACL stays shared with them.
    The owner can be kept only by root, the group only by a member of it: otherwise the
    new file is the writer's, as any file it creates (the permission bits still hold).
    """
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (old.st_uid, old.st_gid):
        for uid in (old.st_uid, -1):
            try:
                os.fchown(fd, uid, old.st_gid)
                break
            except OSError:
                continue
    os.fchmod(fd, stat.S_IMODE(old.st_mode))
    _copy_xattrs(path, fd)


def _copy_xattrs(path: Path, fd: int) -> None:
    """Copy ``path``'s extended attributes (a POSIX ACL is one) to ``fd``, as far as the
    filesystem and stet's privileges allow (where there are none, there is nothing to do)."""
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(path)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(fd, name, os.getxattr(path, name))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_from(fd: int, offset: int) -> bytes:
    """Everything in the file from ``offset`` to its end, read with ``pread``."""
    size = os.fstat(fd).st_size
    first = os.pread(fd, max(size - offset, 0) + 1, offset)  # one read, one buffer
    if len(first) <= size - offset:
        return first
    parts = [first]  # the file grew meanwhile
    offset += len(first)
    while part := os.pread(fd, 1 << 24, offset):
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def read_piece(fd: int, offset: int, size: int) -> tuple[bytes, bool]:
    """About ``size`` bytes from ``offset``, ending on a :data:`TEAR_ALIGN` boundary of
    the file, or all to its end (``size`` < 0, or the end is near); and whether the file
    goes on after them."""
    end = (offset + size) // TEAR_ALIGN * TEAR_ALIGN
    if size < 0 or end <= offset or end >= os.fstat(fd).st_size:
        return read_from(fd, offset), False
    parts, at = [], offset
    while at < end and (part := os.pread(fd, end - at, at)):
        parts.append(part)
        at += len(part)
    return b"".join(parts), at == end


_PIECE = 2 << 20
#: A version of a file, as its stat tells: inode, size, mtime, ctime and link count.
Snapshot = tuple[int, int, int, int, int]
_IGNORED: Any = object()  # (default of ``stale``: the file's :attr:`LogFile.ignored_head`)


def _snapshot(st: os.stat_result) -> Snapshot:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)


#: Seconds a file may go without its path being looked at, while its descriptor says it
#: is unchanged (see :func:`unchanged_by_descriptor`).
PATH_LOOK = 0.01


def unchanged_by_descriptor(fd: int, snap: Snapshot | None, looked: float) -> bool:
    """Whether the file open as ``fd`` is still as ``snap`` says and still at its path,
    asked with one ``fstat``; ``False`` means: ask the path (``os.stat``).

    Every lookup asks whether the store changed; ``os.stat`` of its path costs 2 us there
    (more the deeper the path), ``fstat`` 1 us, of a skip's 5-8. The descriptor's file is
    the one at the path as long as nothing changed it: a rename over it or an unlink
    drops its link count, a new link raises it, and a rename of it moves its ctime. A
    ctime moves with the kernel's coarse clock, so a file renamed away within the tick
    of its last change, and another put in its place, would go unseen: the path itself
    is looked at again when ``looked`` (a :func:`time.monotonic` of the last look at the
    path) is :data:`PATH_LOOK` old.
    """
    if fd < 0 or snap is None or monotonic() - looked > PATH_LOOK:
        return False
    try:
        st = os.fstat(fd)
    except OSError:  # (a file gone stale on NFS: the path tells)
        return False
    # (_snapshot(st), written out: a call less on every lookup)
    return st.st_nlink > 0 and (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                st.st_nlink) == snap


class LogFile:
    """A store file in one format, kept in step with an :class:`Index`.

    Not thread-safe by itself: the owning backend serialises calls. ``snapshots``: a
    store's own file, whose index is saved beside it (:mod:`stet._snapshot`) and loaded
    from there when the file still starts with what it covers.
    """

    def __init__(self, path: Path, codec: Codec, lock: StoreLock, *, fsync: bool,
                 snapshots: bool = False) -> None:
        self.path = path
        self.snapshots = snapshots
        self._saved: saved_index.Saved | None = None  # the snapshot the index came from
        self.codec = codec
        self.lock = lock
        self.fsync = fsync
        self._fd = -1
        self._ino = -1
        self._pid = pid()
        self._snap: Snapshot | None = None
        self._looked = 0.0  # when the path last showed the file as _snap says
        self._head: Any = None
        self._pos = 0  # offset just past the last complete record
        self._count = 0  # records in the file
        self._tail = "clean"
        self._discarded = b""  # the torn tail the last whole-file parse left out
        #: A head (file generation) whose records are stale and must be ignored.
        self.ignored_head: Any = None
        self._forked = False  # in a forked child, not read since: read the file afresh
        _fork.on_fork_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the descriptor is the parent's (dropped unclosed), and a
        thread of the parent may have left the index half-fed: reset at the next look."""
        self._fd, self._pid, self._forked = -1, pid(), True

    def __del__(self) -> None:
        close_if_ours(self._fd, self._pid)

    @property
    def head(self) -> Any:
        """The codec's head state of the file as last read (``None``: not read yet)."""
        return self._head

    # ------------------------------------------------------------------ reading
    def unchanged(self) -> bool:
        """Whether the file is as last read (one ``fstat`` or ``stat``; a missing file
        never read too)."""
        # (a file not there is asked without the exception a failed stat costs, 2 us)
        if self._snap is None and self._fd < 0 and not self._forked \
                and not os.access(self.path, os.F_OK):
            return True
        return self._as_read()

    def _as_read(self) -> bool:
        """Whether the file is as last read, by its descriptor or else by its path."""
        if self._forked:
            return False
        if unchanged_by_descriptor(self._fd, self._snap, self._looked):
            return True
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._snap is None and self._fd < 0
        except OSError as exc:
            raise self._unreadable(exc) from exc
        if self._snap is not None and _snapshot(st) == self._snap:
            self._looked = monotonic()
            return True
        return False

    def poll(self, index: Index) -> None:
        """Bring ``index`` up to date with the file; one ``fstat`` when nothing changed."""
        if self._as_read():
            return
        with self.lock.shared():
            self._catch_up(index)

    def _reset(self, index: Index) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._forked = False
        self._snap = None
        self._head = None
        self._pos = self._count = 0
        self._tail = "clean"
        self._saved = None
        index.clear()

    def _catch_up(self, index: Index) -> bool:
        """Read what was appended since the last look (lock held). False: no file."""
        if self._forked:
            self._reset(index)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._reset(index)
            return False
        except OSError as exc:
            raise self._unreadable(exc) from exc
        if self._fd >= 0 and self._ino != st.st_ino:
            self._reset(index)  # replaced (remove, clear, rewrite): read the new file
        if self._fd < 0:
            try:
                try:
                    self._fd = open_file(self.path, os.O_RDWR)
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                        raise
                    self._fd = open_file(self.path, os.O_RDONLY)  # to read; see check_writable
            except FileNotFoundError:
                self._reset(index)
                return False
            except OSError as exc:
                raise self._unreadable(exc) from exc
            st = os.fstat(self._fd)
            self._ino = st.st_ino
            if self.snapshots and self._snap is None and not index.count:
                self._restore(index, st)
        fst = st  # the path's stat describes our descriptor's file (same inode)
        if self._snap is not None and fst.st_size < self._pos:
            self._reset(index)  # truncated by someone else: read it again
            return self._catch_up(index)
        if self._snap is None or _snapshot(fst) != self._snap:
            more = True
            while more:
                parsed, more = self._read()
                if parsed is not None:
                    if self._head != self.ignored_head or self._head is None:
                        parsed.chunk.feed(index)
                    self._count += len(parsed.chunk)
                    self._pos += parsed.end
                    self._tail = parsed.tail
            self._snap = _snapshot(fst)
        self._looked = monotonic()
        return True

    def _restore(self, index: Index, st: os.stat_result) -> None:
        """Start from the snapshot beside the file, if the file still begins with what it
        covers (same file, at least as long, same bytes); otherwise read it all."""
        saved = saved_index.load(self.path, digests=False)
        if saved is None or self.ignored_head is not None:
            return
        end = saved.store.get("end")
        if (saved.store.get("kind") != "log" or saved.store.get("ino") != st.st_ino
                or saved.store.get("dev") != st.st_dev or type(end) is not int
                or not 0 < end <= st.st_size
                or saved.store.get("crc32") != (
                    saved_index.checksum(self._fd, end))):
            return
        data = os.pread(self._fd, min(end, 1 << 20), 0)
        head, _start = self.codec.parse_head(data, self.path)
        if head is None:
            head, _start = self.codec.parse_head(read_from(self._fd, 0)[:end], self.path)
        if head is None:
            return
        described = saved.store
        saved = saved_index.load(self.path)  # (the same file, unless replaced meanwhile)
        if saved is None or saved.store != described:
            return
        index.load_state(saved.state)
        self._head, self._pos, self._count = head, end, saved.state.count
        self._tail = "clean"
        self._saved = saved

    def save_snapshot(self, index: Index) -> None:
        """Save ``index`` beside the file if it is worth it (at normal exit): only what
        was read up to the last whole record, and only while the file is the one read."""
        if (not self.snapshots or self._fd < 0 or self._snap is None or self._forked
                or self._tail != "clean" or self.ignored_head is not None
                or index.count != self._count
                or not saved_index.stale_enough(index, self._saved)):
            return
        with self.lock.shared():  # (a rewrite, under the exclusive lock, deletes it)
            st = os.stat(self.path)
            if st.st_ino != self._ino or st.st_size < self._pos:
                return
            description = {"kind": "log", "dev": st.st_dev, "ino": st.st_ino,
                           "end": self._pos,
                           "crc32": saved_index.checksum(self._fd, self._pos)}
            saved_index.save(self.path, index, description, self._saved)

    def _read(self) -> tuple[Parsed | None, bool]:
        """Parse from where the last whole record ended: to the end of the file, or (a
        codec that allows it)
        a piece of it, so that a big file is never all in memory at once (2 MiB pieces:
        a first read of a 1,000,000-run CSV store peaked 115 MB above ``import stet``
        here, against 913 MB read whole, in the same time; 16 MiB pieces: 363 MB). Also
        whether the file goes on after what was parsed."""
        size = _PIECE
        while True:
            offset = self._pos  # (past the head, once a piece held it)
            data, more = read_piece(self._fd, offset, size if self.codec.chunked else -1)
            parsed = self._parse_piece(data, offset, more)
            if not more or (parsed is not None and parsed.end > 0):
                return parsed, more
            size *= 2  # no whole record (or header) in the piece: a longer one

    def _parse_piece(self, data: bytes, offset: int, more: bool) -> Parsed | None:
        if self._head is None:
            head, start = self.codec.parse_head(data, self.path)
            if head is None:
                self._tail = "torn" if data else "clean"
                return None
            self._head = head
            offset += start
            data = data[start:]
            self._pos = offset
        parse = self.codec.parse_piece if more else self.codec.parse
        try:
            return parse(data, self._head, self._count == 0, self.path, keys_only=True,
                         at=offset)
        except Damage as exc:
            raise self._damaged(exc, offset) from None

    def _unreadable(self, exc: OSError) -> StoreError:
        return StoreError(
            f"cannot read the store {self.path}: {exc.strerror or exc}. A store is a file "
            f"stet may read (not a directory, not a loop of symlinks); fix the path or "
            f"point the store at another one."
        )

    def _damaged(self, exc: Damage, offset: int) -> CorruptStoreError:
        """The error for malformed bytes at ``offset + exc.at``, naming their line."""
        at = offset + exc.at
        try:
            with open(self.path, "rb") as f:
                line = f.read(at).count(b"\n") + 1
        except OSError:
            line = 0
        where = f"line {line}" if line else f"byte {at}"
        return CorruptStoreError(
            f"{self.path} is not a readable stet {self.codec.label} store: {where}: "
            f"{exc.what}. That is not what an interrupted write leaves, so stet refuses "
            f"the file rather than cut it; it was left untouched. Fix {where} (or move "
            f"the file aside) and run again."
        )

    def records(self, stale: Any = _IGNORED) -> list[Record]:
        """Every record in the file, read afresh (shared lock held while reading); none if
        the file's head is ``stale`` (default: :attr:`ignored_head`)."""
        with self.lock.shared():
            return list(self._iter_all(stale))

    @property
    def count(self) -> int:
        """Records in the file as last read (stale ones included)."""
        return self._count

    def _iter_all(self, stale: Any = _IGNORED) -> Iterator[Record]:
        parsed = self._parse_all(stale)
        if parsed is not None:
            yield from parsed.chunk.records()

    def _parse_all(self, stale: Any = _IGNORED) -> Parsed | None:
        """The whole file parsed afresh (``None``: no file, no header, or its head is
        ``stale``, default :attr:`ignored_head`)."""
        if stale is _IGNORED:
            stale = self.ignored_head
        try:
            fd = open_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unreadable(exc) from exc
        try:
            data = read_from(fd, 0)
        finally:
            os.close(fd)
        head, start = self.codec.parse_head(data, self.path)
        if head is None or (stale is not None and head == stale):
            return None
        try:
            parsed = self.codec.parse(data[start:], head, True, self.path, at=start)
        except Damage as exc:
            raise self._damaged(exc, start) from None
        parsed.end += start
        self._discarded = data[parsed.end:] if parsed.tail == "torn" else b""
        return parsed

    def _all_for_rewrite(self) -> list[Record]:
        """Every record, for a rewrite; a torn tail the rewrite drops is warned about."""
        records = list(self._iter_all())
        self._warn_if_discarded()
        return records

    def _warn_if_discarded(self) -> None:
        if self._discarded.strip(b" \t\r\n],"):
            self._warn_discarded(self._discarded)

    def _warn_discarded(self, discarded: bytes) -> None:
        warn(
            f"{self.path}: discarded an interrupted write at its end "
            f"({len(discarded)} bytes: {discarded[:80]!r})",
            StoreWarning,
        )

    # ------------------------------------------------------------------ writing
    def append(self, record: Record, index: Index) -> None:
        """Append one record (exclusive lock), catching up with other writers first."""
        with self.lock.exclusive():
            exists = self._catch_up(index)
            stale = self.ignored_head is not None and self._head == self.ignored_head
            if stale:
                self._reset(index)
                self._head = None
                self._rewrite([record], index)
                return
            if not exists or self._head is None:
                self._create(record, index)
                return
            frame = self.codec.frame(record, self._head, self._count == 0)
            if frame is None:  # the format needs a wider header: rewrite the file
                self._rewrite([*self._all_for_rewrite(), record], index)
                return
            if self._tail == "open":  # the last record lacks its newline: write it first
                frame = b"\n" + frame
            elif self._tail != "clean":
                self._repair()
            self._write_at_end(frame + self.codec.terminator)
            self._pos += len(frame)
            self._count += 1
            self._tail = "clean"
            self._snap = _snapshot(os.fstat(self._fd))
            index.add(record)

    def _write_at_end(self, data: bytes) -> None:
        """Write ``data`` at ``_pos`` (over the terminator); a write that fails (a full
        disk, a file size limit, an I/O error, an interrupt) puts the old end back, so it
        leaves no cut record for the next reader to judge, and says so naming the file."""
        old_end = read_from(self._fd, self._pos)  # the terminator (a few bytes, or none)
        try:
            written = os.pwrite(self._fd, data, self._pos)
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], self._pos + written)
            if self.fsync:
                os.fsync(self._fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._pos)
                os.pwrite(self._fd, old_end, self._pos)
            with contextlib.suppress(OSError):
                self._snap = _snapshot(os.fstat(self._fd))
            if isinstance(exc, OSError):
                raise StoreError(
                    f"could not append to {self.path}: {exc.strerror or exc}. The record "
                    f"was not saved and the store was left as it was; free some space (or "
                    f"fix what the error names) and run again."
                ) from exc
            raise

    def _repair(self) -> None:
        size = os.fstat(self._fd).st_size
        if size > self._pos:
            discarded = read_from(self._fd, self._pos)
            if discarded.strip(b" \t\r\n],"):
                self._warn_discarded(discarded)
            os.ftruncate(self._fd, self._pos)
        self._tail = "clean"

    def _create(self, record: Record, index: Index) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            # stet creates files atomically, so a non-empty file without a header is foreign
            raise CorruptStoreError(
                f"{self.path} is not a readable stet {self.codec.label} store: it has content "
                f"but no complete header. The file was left untouched; move it aside or "
                f"point the store at another path."
            )
        self._rewrite([record], index)

    def rewrite(self, keep: Callable[[Record], bool], index: Index) -> int:
        """Keep only records for which ``keep`` is true; return how many were dropped."""
        with self.lock.exclusive():
            if not self._catch_up(index):
                return 0
            records = list(self._iter_all())
            kept = [r for r in records if keep(r)]
            if len(kept) != len(records):
                self._warn_if_discarded()
                self._rewrite(kept, index)
            return len(records) - len(kept)

    def _rewrite(self, records: Sequence[Record], index: Index) -> None:
        data, _head = self.codec.render(records, self._head)
        if self.snapshots:  # (the new file starts as no snapshot says: remove it first)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(index_file(self.path))
        atomic_write(self.path, data, fsync=True)
        self._reset(index)
        self._catch_up(index)

    def close(self) -> None:
        """Close the file descriptor; the next use reopens and rereads the file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._snap = None
        self._head = None
        self._pos = self._count = 0

    def check(self) -> None:
        """Open and parse the file now, raising :class:`CorruptStoreError` if it is bad."""
        with self.lock.shared():
            list(self._iter_all())

