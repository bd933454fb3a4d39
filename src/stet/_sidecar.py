"""The files stet keeps beside a store, opened without following symbolic links.

A store ``runs.csv`` has sidecars: ``runs.csv.lock``, ``runs.csv.claims``,
``runs.csv.failures.jsonl``, ``runs.csv.stet-log`` (Parquet), temporary files
``.runs.csv.stet-tmp-*`` while it is rewritten, and SQLite's own ``-wal``, ``-shm`` and
``-journal``. stet makes these files itself, so a symbolic link in their place was put
there by someone else: following it would append to, truncate or create whatever file it
points at. Every sidecar is therefore opened through :func:`open_file`, with
``O_NOFOLLOW``, and a link is refused with a :class:`~stet.errors.StoreError`. The store
file itself may be a symbolic link (to a store kept elsewhere).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import StoreError

__all__ = [
    "CLAIMS",
    "FAILURES",
    "LOCK",
    "PARQUET_LOG",
    "PLAN",
    "SIDECAR_SUFFIXES",
    "SQLITE_JOURNALS",
    "SQLITE_SHM",
    "SQLITE_WAL",
    "check_writable",
    "claims_file",
    "export_temp_file",
    "failures_file",
    "index_file",
    "is_sidecar",
    "lock_file",
    "open_file",
    "parquet_log_file",
    "plan_file",
    "refuse_links",
    "reraise_as_store_error",
    "same_file",
    "sidecar",
    "sidecars",
    "temp_file",
    "temp_files",
]

# Every name stet gives a file beside a store is spelled here, and only here.
LOCK = ".lock"  #: the store's lock (never deleted: see :mod:`stet._locking`)
CLAIMS = ".claims"  #: claims of runs being executed (see :mod:`stet._claims`)
FAILURES = ".failures.jsonl"  #: failed runs, JSON Lines
PARQUET_LOG = ".stet-log"  #: records appended to a Parquet store, waiting to be folded
PLAN = ".plan.jsonl"  #: the runs sweeps asked for (see :mod:`stet.backends._plan`)
INDEX = ".stet-index"  #: the index saved at exit, a cache (see :mod:`stet._snapshot`)
SQLITE_WAL = "-wal"  #: SQLite's write-ahead log (commits not yet in the database file)
SQLITE_SHM = "-shm"  #: SQLite's WAL index (memory shared by its connections)
SQLITE_JOURNALS = (SQLITE_WAL, SQLITE_SHM, "-journal")  #: SQLite's own, beside its database
#: What stet (or SQLite) appends to a store's name for the files it keeps beside it.
SIDECAR_SUFFIXES = (LOCK, CLAIMS, FAILURES, PARQUET_LOG, *SQLITE_JOURNALS, PLAN, INDEX)
#: Sidecars a run writes to (``.lock`` is only locked, which a read-only descriptor can;
#: ``.claims`` is opened for writing when claiming, before the function runs).
_WRITTEN = (FAILURES, PARQUET_LOG, *SQLITE_JOURNALS)
_TMP_INFIX = ".stet-tmp-"
_EXPORT_INFIX = ".stet-export-"


def lock_file(store: Path) -> Path:
    """The lock file kept beside ``store``."""
    return sidecar(store, LOCK)


def claims_file(store: Path) -> Path:
    """The claims file kept beside ``store``."""
    return sidecar(store, CLAIMS)


def failures_file(store: Path) -> Path:
    """The failure log kept beside ``store``."""
    return sidecar(store, FAILURES)


def plan_file(store: Path) -> Path:
    """The sweeps' plan kept beside a store."""
    return sidecar(store, PLAN)


def index_file(store: Path) -> Path:
    """The snapshot of the index kept beside ``store``."""
    return sidecar(store, INDEX)


def parquet_log_file(store: Path) -> Path:
    """Where records appended to the Parquet store ``store`` wait to be folded."""
    return sidecar(store, PARQUET_LOG)


def temp_file(store: Path, owner: int | str) -> Path:
    """The temporary file of ``owner`` (a process id) rewriting ``store`` (which must not
    be a symbolic link: the file it names is rewritten)."""
    return store.with_name(f".{store.name}{_TMP_INFIX}{owner}")


def temp_files(store: Path) -> list[str]:
    """Every temporary file of ``store`` (left by writers killed mid-write)."""
    import glob  # (here: only a rewrite or a save looks for them)

    return glob.glob(glob.escape(str(store.with_name(f".{store.name}{_TMP_INFIX}"))) + "*")


def export_temp_file(out: str) -> str:
    """The file ``stet export`` writes before renaming it to ``out``."""
    directory, name = os.path.split(os.path.abspath(out))
    return os.path.join(directory, f".{name}{_EXPORT_INFIX}{os.getpid()}")


def sidecar(store: Path, suffix: str) -> Path:
    """The sidecar ``suffix`` of ``store``: beside the store's file, so that a store
    reached through a symbolic link has its sidecars beside the file the link names,
    and every spelling of the store shares one lock, one claims file, one failure log."""
    if os.path.islink(store):
        store = Path(os.path.realpath(store))
    return store.with_name(store.name + suffix)


def sidecars(store: Path) -> list[Path]:
    """Every sidecar a store may have (existing or not), temporary files excepted."""
    return [sidecar(store, s) for s in SIDECAR_SUFFIXES]


def is_sidecar(path: Path) -> bool:
    """Whether ``path`` is named as a sidecar (no store has such a name: stores are
    chosen by extension, and no sidecar suffix is a store extension)."""
    name = path.name
    return name.endswith(SIDECAR_SUFFIXES) or (name.startswith(".") and _TMP_INFIX in name)


def _refuse_link(path: Path) -> StoreError:
    return StoreError(
        f"{path} is a symbolic link, and stet keeps this file beside the store for itself: "
        f"it does not write through links it did not make (that would change the file "
        f"the link points to). Remove the link (rm {path}) and try again."
    )


def _refuse_hard_link(path: Path, nlink: int) -> StoreError:
    return StoreError(
        f"{path} has {nlink - 1} other name(s) (a hard link), and stet keeps this file "
        f"beside the store for itself: writing it would change the file under its other "
        f"names too. Remove it (rm {path}) and try again."
    )


def open_file(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` for a file stet keeps: close-on-exec, and for a sidecar
    (:func:`is_sidecar`) without following a symbolic link, only a regular file, and
    for writing only a file with no other name (no hard link).

    Raises:
        StoreError: ``path`` is a sidecar that is a symbolic link or not a regular file.
        OSError: The file cannot be opened (callers say what that means for them).
    """
    if not is_sidecar(path):
        return os.open(path, flags | os.O_CLOEXEC, mode)
    # O_NONBLOCK: a FIFO put in a sidecar's place must not hang the open (dropped below)
    created = False
    try:
        base = flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        if flags & os.O_CREAT and not flags & os.O_EXCL:
            try:  # made here? then it takes the store's permissions (below)
                fd = os.open(path, base | os.O_EXCL, mode)
                created = True
            except FileExistsError:
                fd = os.open(path, base & ~os.O_CREAT, mode)
        else:
            fd = os.open(path, base, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise _refuse_link(path) from None
        raise
    if created:
        _like_store(fd, path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"{path} is not a regular file, and stet keeps this file beside the store "
                f"for itself. Move it aside and try again."
            )
        if st.st_nlink > 1 and flags & (os.O_WRONLY | os.O_RDWR):
            raise _refuse_hard_link(path, st.st_nlink)
        os.set_blocking(fd, True)  # (clears O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _like_store(fd: int, path: Path) -> None:
    """Give a sidecar just created the permission bits and group of its store, so that a
    group-shared store (0664, setgid directory) stays usable by the group: the creator's
    umask would otherwise make its lock and claims files 0644, and the next member of the
    group could not claim a run. Best effort: a store not yet made keeps the umask's."""
    name = path.name
    suffix = next((s for s in SIDECAR_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return
    try:
        st = os.stat(path.with_name(name[: -len(suffix)]))
    except OSError:
        return
    with contextlib.suppress(OSError):
        if st.st_gid != os.fstat(fd).st_gid:
            os.fchown(fd, -1, st.st_gid)
        os.fchmod(fd, (st.st_mode & 0o666) | 0o600)


def refuse_links(store: Path, suffixes: tuple[str, ...] = SIDECAR_SUFFIXES) -> None:
    """Raise :class:`StoreError` if a sidecar of ``store`` is a symbolic link (for files
    opened by others, such as SQLite's journals)."""
    for suffix in suffixes:
        side = sidecar(store, suffix)
        if os.path.islink(side):
            raise _refuse_link(side)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one existing file (links followed, hard links included)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# ------------------------------------------------------------------ writability
#: store -> (its directory's name, what the directory looked like, when) when last found
#: writable
_checked: dict[Path, tuple[str, tuple[int, ...], float]] = {}
_RECHECK = 1.0  # seconds between full checks of a store whose directory did not change


def _look(directory: str) -> tuple[int, ...]:
    """One ``stat`` that changes when an entry is added to or removed from the store's
    directory (a link planted, the store replaced), or the directory changes mode or
    owner. A change to the store file alone (``chmod``) is seen by the next full check:
    records are appended through a descriptor opened while it was writable."""
    d = os.stat(directory)
    return (d.st_ino, d.st_mode, d.st_uid, d.st_gid, d.st_mtime_ns, d.st_ctime_ns)


def check_writable(store: Path) -> None:
    """Raise :class:`StoreError` unless this process can write ``store``: the store file
    (or, if it does not exist yet, its directory), the directory the store's file is in
    (rewrites replace the file, SQLite keeps its journal there), and the sidecars a run
    writes to. Sidecars that are symbolic links are refused too. Called before a run
    starts, so that the function does not run only for its record to be lost.

    ``access()`` is asked first; where it says no, the answer is tried for real (opening
    the file for appending, creating and removing a file in the directory), so that a
    filesystem whose ``access()`` is stricter than its writes (NFS uid mapping, ACLs
    evaluated by the server) is not refused. A full check costs a dozen system calls; it
    is repeated when the directory changes as :func:`_look` sees it, and every second
    otherwise (a remount, ``chattr``, ``chmod`` of the file). A write that fails anyway is
    still a :class:`StoreError`."""
    seen = _checked.get(store)
    now = time.monotonic()
    if seen is not None and now - seen[2] < _RECHECK:
        try:
            if _look(seen[0]) == seen[1]:
                return
        except OSError:
            pass
    _check_writable(store)
    directory = os.path.dirname(os.path.realpath(store)) or "."
    try:
        look = _look(directory)
    except OSError:
        return
    if len(_checked) > 1000:
        _checked.clear()
    _checked[store] = (directory, look, now)


def _check_writable(store: Path) -> None:
    real = Path(os.path.realpath(store))
    if store.parent != real.parent and not os.access(str(store.parent) or ".", os.X_OK):
        # a link to a store kept elsewhere: its own directory is only passed through
        raise _unwritable(store, store.parent, _why(str(store.parent) or ".", dir_=True))
    where = str(real.parent) or "."
    if (not os.access(where, os.W_OK | os.X_OK, effective_ids=True)
            and not _can_create_in(real)):
        raise _unwritable(store, real.parent, _why(where, dir_=True))
    if (os.path.exists(store) and not os.access(store, os.W_OK, effective_ids=True)
            and not _can_append(store)):
        raise _unwritable(store, store, _why(str(store)))
    try:
        fs = os.statvfs(real.parent)
    except OSError:
        pass
    else:  # not one block left (for this user: root may use the reserved ones)
        if (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) == 0 and fs.f_blocks:
            raise _unwritable(store, store, "the disk is full")
    for suffix in _used_by(store):
        side = sidecar(store, suffix)
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _unwritable(store, side, exc.strerror or str(exc)) from None
        if stat.S_ISLNK(st.st_mode):
            raise _refuse_link(side)
        if st.st_nlink > 1 and suffix in (*_WRITTEN, CLAIMS):
            raise _refuse_hard_link(side, st.st_nlink)
        if (suffix in _WRITTEN and not os.access(side, os.W_OK, effective_ids=True)
                and not _can_append(side)):
            raise _unwritable(store, side, _why(str(side)))


_OWN = {".parquet": (PARQUET_LOG,), ".sqlite": SQLITE_JOURNALS, ".sqlite3": SQLITE_JOURNALS,
        ".db": SQLITE_JOURNALS}


def _used_by(store: Path) -> tuple[str, ...]:
    """The sidecars a store of this kind uses: a file merely named like another kind's
    (``runs.csv-wal``) is none of its business, and no reason to refuse it."""
    return (LOCK, CLAIMS, FAILURES, *_OWN.get(store.suffix.lower(), ()))


def _can_append(path: Path) -> bool:
    """Whether ``path`` opens for appending (nothing is written): the truth where
    ``access()`` may be wrong."""
    try:
        os.close(open_file(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY))
    except (OSError, StoreError):
        return False
    return True


def _can_create_in(real: Path) -> bool:
    """Whether a file can be made (and removed) beside ``real``: a temporary file of the
    store's own kind, which rewrites clear away if it is ever left behind."""
    probe = temp_file(real, f"probe-{os.getpid()}")
    try:
        os.close(open_file(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except (OSError, StoreError):
        return False
    try:
        os.unlink(probe)
    except OSError:
        return False  # made but not removable: a rewrite could not replace the store
    return True


def _why(path: str, dir_: bool = False) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "it does not exist"
    except NotADirectoryError:
        return "a part of its path is a file, not a directory"
    except OSError as exc:
        return exc.strerror or str(exc)
    if dir_ and not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "it is on a read-only filesystem"
    except OSError:
        pass
    return "permission denied"


def _unwritable(store: Path, culprit: Path, why: str) -> StoreError:
    what = "the store" if culprit == store else (
        "the store's directory" if culprit in (store.parent, Path(os.path.realpath(store)).parent)
        else "a file the store keeps beside it")
    if why == "the disk is full":
        todo = "free some space"
    elif why in ("it does not exist", "it is not a directory") or "a part of" in why:
        todo = (f"create the directory (mkdir -p {culprit})" if why == "it does not exist"
                else "give a path whose directories are directories")
        return StoreError(
            f"cannot write {what} {culprit} ({why}), so a run could not be recorded; it "
            f"was not started. To run, {todo}, or point the store at another path."
        )
    else:
        todo = ("make it writable (chmod u+w; chattr -i if lsattr shows it immutable; or "
                "remount read-write)")
    return StoreError(
        f"cannot write {what} {culprit} ({why}), so a run could not be recorded; it was "
        f"not started. Reading the store (stet status, stet ls, stet.load) still works. "
        f"To run, {todo} or point the store at a writable path."
    )


# ----------------------------------------------------------------------- errors
@contextlib.contextmanager
def reraise_as_store_error(path: object, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` (a full disk, a vanished mount, permissions) into a
    :class:`StoreError` naming the file and what to do."""
    try:
        yield
    except OSError as exc:
        raise os_error(path, doing, exc) from exc


def os_error(path: object, doing: str, exc: OSError) -> StoreError:
    """A :class:`StoreError` for ``exc`` met while ``doing`` something to ``path``."""
    name = exc.filename if exc.filename is not None else path
    what = exc.strerror or str(exc)
    advice = {
        errno.ENOSPC: "the disk is full: free some space and try again",
        errno.EDQUOT: "the disk quota is exceeded: free some space and try again",
        errno.EROFS: "the filesystem is read-only: point the store at a writable path",
        errno.EACCES: "check the permissions of the store and of its directory",
        errno.EPERM: "check the permissions (and attributes, lsattr) of the store",
        errno.EBADF: "the store cannot be written: check its permissions",
        errno.EIO: "the disk reported an input/output error: check it, then try again",
        errno.EISDIR: "it is a directory, not a store file: point the store at a file",
    }.get(exc.errno or 0, "check the store's file and directory, then try again")
    return StoreError(f"{doing} {name} failed: {what}; {advice}.")
