"""A third-party store, made only from stet's public Store interface: one JSON file per
record in a directory. It is the proof that a user can add a store (see
docs/how-to/own-store.md); ``test_store_contract.py`` runs ``stet.testing`` against it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import stet
from stet.backends import Capabilities, Store


class DirectoryStore(Store):
    """Each record is a file ``<hash>.json`` in ``directory``, written atomically."""

    capabilities = Capabilities(remove_by_match=True)

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"directory store {self.directory}"

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)

    def _read(self) -> list[tuple[Path, dict[str, str]]]:
        out = []
        for path in self._files():
            try:
                text = path.read_text("utf-8", errors="surrogatepass")  # (as written)
                out.append((path, json.loads(text)))
            except FileNotFoundError:  # removed by another handle meanwhile
                continue
        out.sort(key=lambda pr: int(pr[1].get("_seq", "0")))
        return [(p, {k: v for k, v in r.items() if k != "_seq"}) for p, r in out]

    # -- the five methods ------------------------------------------------------
    def has(self, key_dict: dict[str, Any]) -> bool:
        wanted = {k: stet.canonical(v) for k, v in key_dict.items()}
        return any(all(r.get(k) == v for k, v in wanted.items()) for _, r in self._read())

    def record(self, key_dict: dict[str, Any]) -> None:
        rec = {k: stet.canonical(v) for k, v in key_dict.items()}
        rec.setdefault("_stet_timestamp", dt.datetime.now(dt.UTC).isoformat())
        self.append_record(rec)

    def load(self) -> list[dict[str, Any]]:
        return [r for _, r in self._read()]

    def remove(self, key_dict: dict[str, Any]) -> int:
        return self.remove_where(None, {k: stet.canonical(v) for k, v in key_dict.items()})

    def clear(self) -> None:
        for path in self._files():
            path.unlink(missing_ok=True)

    # -- doing better than the defaults -----------------------------------------
    def append_record(self, record: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        seq = str(_sequence())
        text = json.dumps({**record, "_seq": seq}, ensure_ascii=False)
        name = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(text, "utf-8", errors="surrogatepass")
        os.replace(tmp, self.directory / f"{name}.json")

    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        wanted = dict(zip(fields, texts, strict=True))
        # (a record holding fields beyond the key matches: a narrower key keeps runs done)
        return any(all(r.get(k) == v for k, v in wanted.items())
                   and r.get("_stet_func", "") in ("", func) for _, r in self._read())

    def remove_where(self, func: str | None, fields: dict[str, str]) -> int:
        n = 0
        for path, r in self._read():
            if func is not None and r.get("_stet_func", "") not in ("", func):
                continue
            if all(r.get(k) == v for k, v in fields.items()):
                path.unlink(missing_ok=True)
                n += 1
        return n


_last = 0
_last_lock = threading.Lock()


def _sequence() -> int:
    """Nanoseconds since the epoch, strictly increasing in this process: record order."""
    global _last
    with _last_lock:
        _last = max(time.time_ns(), _last + 1)
        return _last
