"""Run digests: 128 bits that stand for a done run in the index.

The index keeps, for every record, one integer: the BLAKE2b-128 digest of the record's
function name, key field names and key texts, in an encoding that no two different runs
share (see :class:`Digester`). A Python ``int`` of 128 bits in a ``set`` costs about 80
bytes, where a tuple of the run's strings cost 300 to 400; a million runs fit in 80 MB.

A match of digests is taken as the run being done, with no second look at the store:
the digests are uniformly distributed, so among ``n`` runs the probability that any two
different ones share a digest is at most ``n² / 2**129`` (the birthday bound): 1.5e-21
for a thousand million runs, below the 1e-18 stet allows for a skip taken on a digest
alone. (A 64-bit digest would give 0.03 at that size: it could only ever ask for a
lookup to be confirmed.)
"""

from __future__ import annotations

from collections.abc import Sequence

try:  # where hashlib itself takes BLAKE2 from: hashlib also loads OpenSSL (3-4 ms)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python without CPython's _blake2
    from hashlib import blake2b

__all__ = ["Digester", "blake2b", "digest"]

_blake2b = blake2b
_from_bytes = int.from_bytes
# BLAKE2b's personalisation keeps the two encodings below apart (and apart from any other
# use of the hash): the same bytes under two persons give unrelated digests.
_PLAIN = b"stet-run-v1"
_FRAMED = b"stet-run-v1-len"


class Digester:
    """Digests of runs whose records hold the key fields ``names`` (sorted).

    A run ``(func, text...)`` is encoded as its names, its function and its texts, each
    followed (the last: preceded) by a NUL character: injective as long as no part holds
    a NUL itself, which the count of NULs tells. A run one of whose parts holds one is
    encoded with each part prefixed by its length instead, under another
    personalisation.
    """

    __slots__ = ("_framed_only", "_hasher", "_last", "_seps", "names")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._seps = len(names)  # NULs in "func\0text\0...": one per text
        # Names holding a NUL would make the names' part ambiguous: frame every run then.
        self._framed_only = any("\0" in n for n in names)
        # The names' part is hashed once; each run continues from a copy of the state
        # (measured: 1.0 us a run, against 1.3-1.9 us hashing the whole text each time).
        self._hasher = _blake2b(
            "".join(n + "\0" for n in names).encode("utf-8", "surrogatepass"),
            digest_size=16, person=_PLAIN)
        self._last: tuple[str, tuple[str, ...] | None, int] = ("", None, 0)

    @classmethod
    def of(cls, names: tuple[str, ...]) -> Digester:
        """The process's digester of ``names`` (one for every index: see :meth:`run`)."""
        d = _digesters.get(names)
        if d is None:
            d = _digesters[names] = cls(names)
        return d

    def run(self, func: str, texts: tuple[str, ...]) -> int:
        """:meth:`row` of ``(func, *texts)``, for a lookup. The last run asked is kept: a
        lookup often asks two indexes of the same run in a row (a Parquet store's and its
        log's), and each digest costs about 0.7 us."""
        last = self._last  # (one tuple, read and replaced whole: safe between threads)
        if last[1] is texts and last[0] == func:
            return last[2]
        d = self.row((func, *texts))
        self._last = (func, texts, d)
        return d

    def row(self, row: Sequence[str]) -> int:
        """The digest of ``(func, text...)``, texts in the order of :attr:`names`."""
        s = "\0".join(row)
        if s.count("\0") != self._seps or self._framed_only:
            return self._framed(row)
        h = self._hasher.copy()
        h.update(s.encode("utf-8", "surrogatepass"))
        return _from_bytes(h.digest(), "little")

    def _framed(self, row: Sequence[str]) -> int:
        s = "".join(f"{len(p)}:{p}" for p in (*self.names, *row))
        return _from_bytes(
            _blake2b(s.encode("utf-8", "surrogatepass"), digest_size=16,
                     person=_FRAMED).digest(), "little")


#: names -> digester (a few per function decorated; never dropped)
_digesters: dict[tuple[str, ...], Digester] = {}


def digest(func: str, names: tuple[str, ...], texts: Sequence[str]) -> int:
    """The digest of a run of ``func`` with key fields ``names`` (sorted) = ``texts``."""
    return Digester(names).row((func, *texts))
