"""What a record's exchange costs: stet's own pipelining against psycopg's ``pipeline()``.

Usage::

    python benchmarks/bench_pg_pipeline.py                  # a throwaway loopback server
    python benchmarks/bench_pg_pipeline.py --url postgresql://user@host/db --records 5000

Recording a run whose claim this worker holds sends two segments, each its own implicit
transaction: the claim's lease row is deleted and the record inserted (and the rows
written meanwhile read back), then, after that commit, the claim's advisory lock is
released. ``session._Session.run`` sends both segments at once and reads both answers:
one round trip. psycopg's public pipeline, ``with conn.pipeline() as p`` with
``p.sync()`` after each segment, waits for each segment's results at its sync: two.
Both ways send the very statements the store sends (taken from a real
``PostgresBackend``), prepared after their second use, on their own connection; the
figure is the median time per record over ``--records`` records, in alternating blocks
so that both see the same machine load.

Nothing here asserts; it reports.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from typing import Any

from bench_postgres import throwaway_server


def _statements(backend: Any) -> tuple[Any, Any]:
    """(segment 1 builder, segment 2) for a record of run ``i``: the store's own SQL."""
    from stet._schema import FUNC_FIELD

    source = backend._source
    feed, claims = source._feed, source.claims
    offset = 12345

    def first(i: int, max_seen: int) -> list[tuple[str, tuple[object, ...]]]:
        record = {"i": str(i), FUNC_FIELD: "f"}
        text = json.dumps(record).encode()
        run = json.dumps(record).encode()
        return [claims.drop_lease_stmt(offset),
                (feed.sql_insert, (*feed.lock_keys, text, max_seen, 1000, run))]

    return first, [claims.unlock_only_stmt(offset)]


def ours(backend: Any, first: Any, second: Any, start: int, n: int) -> list[float]:
    """Per record, seconds: both segments in one ``_Session.run`` (one round trip)."""
    from stet.backends.postgres.session import _Session, _value

    source = backend._source
    s = _Session(source._conninfo(), source._target.scrub)
    out = []
    max_seen = 0
    try:
        for i in range(start, start + n):
            t0 = time.perf_counter()
            res = s.run([first(i, max_seen), second])
            new_id = _value(res[0][-1], 0, 0)
            out.append(time.perf_counter() - t0)
            max_seen = int(new_id or b"0")
    finally:
        s.close()
    return out


def theirs(backend: Any, first: Any, second: Any, start: int, n: int) -> list[float]:
    """Per record, seconds: ``conn.pipeline()`` with ``Pipeline.sync()`` per segment."""
    import psycopg

    source = backend._source
    conn = psycopg.Connection.connect(source._conninfo(), autocommit=True)
    conn.prepare_threshold = 2  # as the session's PREPARE_THRESHOLD
    conn.add_notice_handler(lambda _d: None)  # (unlocking a lock not held warns)

    def params(values: tuple[object, ...]) -> list[object]:
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    out = []
    max_seen = 0
    try:
        cur_a = psycopg.RawCursor(conn)
        cur_b = psycopg.RawCursor(conn)
        cur_c = psycopg.RawCursor(conn)
        for i in range(start, start + n):
            t0 = time.perf_counter()
            (drop, dp), (ins, ip) = first(i, max_seen)
            (unlock, up), = second
            with conn.pipeline() as p:
                cur_a.execute(drop, params(dp))
                cur_b.execute(ins, params(ip))
                p.sync()
                cur_c.execute(unlock, params(up))
            row = cur_b.fetchone()
            out.append(time.perf_counter() - t0)
            max_seen = int(row[0] or 0) if row else 0
    finally:
        conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--block", type=int, default=250, help="records per block")
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        server = throwaway_server()
        url = server.url()
    try:
        from stet.backends.postgres import PostgresBackend

        table = "bench_pipe_" + secrets.token_hex(4)
        sep = "&" if "?" in url else "?"
        with PostgresBackend(f"{url}{sep}table={table}") as backend:
            backend.record({"warm": 1})  # (creates the tables)
            first, second = _statements(backend)
            ours(backend, first, second, 0, 50)  # warm up both (and prepare)
            theirs(backend, first, second, 50, 50)
            a: list[float] = []
            b: list[float] = []
            done = 100
            while len(a) < args.records:
                a += ours(backend, first, second, done, args.block)
                done += args.block
                b += theirs(backend, first, second, done, args.block)
                done += args.block
            backend.clear()
        ma, mb = statistics.median(a) * 1e6, statistics.median(b) * 1e6
        print(f"records per way: {len(a)}")
        print(f"session.run, one round trip     : median {ma:7.1f} us per record")
        print(f"conn.pipeline() + sync() per seg: median {mb:7.1f} us per record "
              f"({(mb - ma) / ma:+.0%})")
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
