"""Paced writers: insert benchmark rows at a target rate and remember when each committed.

Each row's text is "b:<seq>:<epoch ms the insert was due>", so any receiver can tell which
write it is and, without a shared table, roughly when it was sent; the exact commit time
(epoch seconds right after COMMIT returned) is kept here and joined with the receiver's
arrival times afterwards.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import psycopg

ITEM_SQL = "INSERT INTO {table} (checklist_id, text, done, position, version) VALUES (%s, %s, false, 0, 1)"
# Several rows in one statement (each still captured by its own row trigger): the load
# generator's own CPU, on the machine it measures, is then a fraction of executemany's.
ITEMS_SQL = ("INSERT INTO {table} (checklist_id, text, done, position, version)"
             " SELECT %s, t, false, 0, 1 FROM unnest(%s::text[]) WITH ORDINALITY AS r(t, n) ORDER BY n")


def paced_write(url: str, *, checklist_id: int, rate: float, duration: float, per_tx: int = 1,
                table: str = "checklists_item", start_seq: int = 1,
                after_commit: Callable[[list[int], list[str]], None] | None = None,
                stop: threading.Event | None = None, synchronous_commit: bool = True) -> dict:
    """Write rate rows/s for duration s, per_tx rows per transaction, on one connection.

    Returns {"commits": {seq: epoch s}, "achieved_rate": rows/s, "behind_s": how late the
    writer ended (it cannot keep up when > 0)}. after_commit(seqs, texts) runs right after
    each commit (the seed's publish-after-save). synchronous_commit=False lets one
    connection commit thousands of transactions/s (fan-out offers more than fsync allows).
    """
    commits: dict[int, float] = {}
    sql = ITEM_SQL.format(table=table)
    many_sql = ITEMS_SQL.format(table=table)
    total = int(rate * duration)
    seq = start_seq
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(f"SET synchronous_commit = {'on' if synchronous_commit else 'off'}")
        conn.commit()
        t0 = time.monotonic()
        wall0 = time.time()
        written = 0
        while written < total and not (stop and stop.is_set()):
            due = t0 + written / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n = min(per_tx, total - written)
            seqs = list(range(seq, seq + n))
            # When the row was due by the offered rate (a writer that falls behind shows
            # it, as the sockjs-node peer's events do), never later than now.
            stamp = min(time.time(), wall0 + written / rate) * 1000
            texts = [f"b:{s}:{stamp:.3f}" for s in seqs]
            if n == 1:
                conn.execute(sql, (checklist_id, texts[0]))
            else:
                conn.execute(many_sql, (checklist_id, texts))
            conn.commit()
            now = time.time()
            for s in seqs:
                commits[s] = now
            if after_commit:
                after_commit(seqs, texts)
            seq += n
            written += n
        elapsed = time.monotonic() - t0
    return {"commits": commits, "achieved_rate": written / elapsed if elapsed else 0.0,
            "behind_s": max(0.0, elapsed - duration), "next_seq": seq}


def parallel_write(url: str, *, writers: int, checklist_ids: list[int], rate: float, duration: float,
                   per_tx: int = 1, table: str = "checklists_item") -> dict:
    """paced_write split over `writers` threads (each rate/writers), seqs disjoint per thread."""
    results: list[dict] = [{} for _ in range(writers)]
    span = int(rate * duration) + 10

    def one(i: int) -> None:
        results[i] = paced_write(url, checklist_id=checklist_ids[i % len(checklist_ids)], rate=rate / writers,
                                 duration=duration, per_tx=per_tx, table=table, start_seq=1 + i * span)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    commits: dict[int, float] = {}
    for r in results:
        commits.update(r.get("commits", {}))
    return {"commits": commits, "achieved_rate": sum(r.get("achieved_rate", 0) for r in results),
            "behind_s": max(r.get("behind_s", 0) for r in results)}
