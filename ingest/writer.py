"""The batch writer: a bounded queue of readings, flushed to PostgreSQL with binary COPY.

How one batch is written (all in one transaction):

1. Sort the rows into primary-key order (stable: among rows of one key, arrival order) and
   screen them for values binary COPY would store wrongly instead of refusing
   (`ingest.rows.screen_rows`); those go to dead letters. Sorted rows touch
   the index page by page rather than all over it: raw COPY of batch-sorted rows measured
   ~1.2× arrival order on a 1M-row table (bench/ingest.py), the writer ~5 % net of the sort.
2. COPY the rest straight into ``readings`` inside a savepoint. Conflicts are rare (re-reads,
   replays, retries after an unknown commit outcome), so this is the path nearly every batch
   takes, at close to raw COPY speed.
3. Only if that raises a unique violation: roll back to the savepoint, keep the first row to
   arrive of each key in the batch (a later one with another value or quality is a
   conflict: dead-lettered with the value kept; an identical one counts as a duplicate),
   COPY into a temporary staging table and ``INSERT … ON CONFLICT DO NOTHING``. A replayed
   batch never duplicates; what is already stored wins over what arrives later.
4. Announce the rows that were new on the live feed's channel (`ingest.live`, pg_notify in
   this transaction: delivered on commit, in commit order); `notify=False` turns it off.

Errors:

* temporary (connection lost, server shutting down, serialisation failure, out of resources —
  by SQLSTATE class) → reconnect and retry the whole batch with capped exponential backoff;
  the queue stays bounded, so producers wait instead of memory growing;
* a day with no partition yet (SQLSTATE 23514 naming no constraint) → create it and retry;
* anything else is permanent for some rows: bisect the batch in savepoints until the bad rows
  are isolated, park each in ``dead_letters`` with the reason, commit the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC

import psycopg
from psycopg import errors as pgerr

from ingest import metrics
from ingest.deadletters import INSERT_SQL, DeadLetter, dead_letter_row
from ingest.live import QUEUE_FULL_STATE, notify, reading_payloads
from ingest.model import Reading
from ingest.plausibility import Screen, shipped_rules
from ingest.retry import Backoff
from ingest.rows import Row, as_row, row_payload, screen_rows
from ingest.schema import ensure_partitions, is_missing_partition

log = logging.getLogger(__name__)

_COLUMNS = "(device_id, quantity, ts, value, quality)"
_TYPES = ["int4", "text", "timestamptz", "float8", "int2"]
# SQLSTATE classes worth retrying: connection exception, transaction rollback, insufficient
# resources, operator intervention (admin shutdown, crash recovery), system error.
_TEMPORARY_CLASSES = {"08", "40", "53", "57", "58"}
_TEMPORARY_STATES = {"55P03"}  # lock not available


@dataclass
class WriteResult:
    written: int = 0
    duplicates: int = 0
    dead: int = 0
    new_rows: list[Row] = field(default_factory=list, repr=False)  # for the live feed


def is_temporary(exc: BaseException) -> bool:
    """Whether retrying the same write later may succeed (by SQLSTATE; no state and an
    OperationalError means the connection itself failed)."""
    state = getattr(exc, "sqlstate", None)
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    if state == "57014":  # query_canceled: a statement timeout or an aborted COPY
        return False
    return state[:2] in _TEMPORARY_CLASSES or state in _TEMPORARY_STATES


class ReadingWriter:
    """Accepts readings from collectors and writes them in batches; one connection.

    ``await add_many(readings)`` returns as soon as the readings are queued and waits only
    when ``max_queued`` readings are already waiting (backpressure). ``run()`` is the writing
    loop; ``flush()`` waits until everything queued so far is committed or dead-lettered.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        batch_size: int = 20_000,
        max_delay: float = 1.0,
        max_queued: int = 200_000,
        backoff: Backoff | None = None,
        screen: Screen | None = None,
        notify: bool = True,
    ) -> None:
        """`screen`: the plausibility screen (default: the shipped rules, every device at
        the default nominal voltage); `notify`: announce new rows on the live feed."""
        self.conninfo = conninfo
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.max_queued = max_queued
        self.backoff = backoff or Backoff()
        self.screen = screen or shipped_rules()
        self.notify = notify
        self._buffer: list[Reading] = []
        self._cond = asyncio.Condition()
        self._accepted = 0  # readings taken into the queue, ever
        self._done = 0  # readings written, found duplicate or dead-lettered, ever
        self._flush_wanted = False
        self._closing = False
        self._conn: psycopg.Connection | None = None  # used only from the writing thread
        self.totals = WriteResult()

    # -- producer side -------------------------------------------------------------------

    async def add(self, reading: Reading) -> None:
        await self.add_many((reading,))

    async def add_many(self, readings: Sequence[Reading]) -> int:
        """Queue readings; return a ticket for `wait_stored` (their position in the stream)."""
        if not readings:
            return self._accepted
        self.screen.flag(readings)  # absurd values are stored, flagged SUSPECT
        async with self._cond:
            await self._cond.wait_for(lambda: len(self._buffer) < self.max_queued)
            self._buffer.extend(readings)
            self._accepted += len(readings)
            metrics.QUEUE_DEPTH.set(len(self._buffer))
            if len(self._buffer) >= self.batch_size:
                self._cond.notify_all()
            return self._accepted

    async def wait_stored(self, ticket: int) -> int:
        """Wait until every reading up to `ticket` is stored or dead-lettered (batches are
        written in order); return how far the writer has got."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._done >= ticket)
            return self._done

    async def flush(self) -> None:
        """Wait until every reading accepted so far is stored (or dead-lettered)."""
        async with self._cond:
            target = self._accepted
            self._flush_wanted = True
            self._cond.notify_all()
            await self._cond.wait_for(lambda: self._done >= target)

    # -- writing loop --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                async with self._cond:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.max_delay):
                            await self._cond.wait_for(
                                lambda: (
                                    len(self._buffer) >= self.batch_size
                                    or self._flush_wanted
                                    or self._closing
                                )
                            )
                    batch = self._buffer[: self.batch_size]
                    del self._buffer[: self.batch_size]
                    if not self._buffer:
                        self._flush_wanted = False
                    metrics.QUEUE_DEPTH.set(len(self._buffer))
                    self._cond.notify_all()  # producers waiting on a full queue
                    if not batch and self._closing:
                        return
                if batch:
                    await self._write_never_dropping(batch)
                    async with self._cond:
                        self._done += len(batch)
                        self._cond.notify_all()
        finally:
            await self._drop_connection()

    async def _write_never_dropping(self, batch: Sequence[Reading]) -> None:
        """`write_batch`, and if something unforeseen escapes it, log and try again later:
        the loop must not die and the batch must not vanish."""
        for delay in self.backoff.delays():
            try:
                await self.write_batch(batch)
                return
            except Exception:
                metrics.WRITE_RETRIES.labels("unexpected").inc()
                log.exception("writing %d readings failed unexpectedly; retrying", len(batch))
                await self._drop_connection()
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Write what is queued, then stop `run()`."""
        async with self._cond:
            self._closing = True
            self._cond.notify_all()

    async def write_batch(self, batch: Sequence[Reading]) -> WriteResult:
        """Write one batch, retrying temporary errors until it is stored.

        The database work runs in a worker thread on a blocking connection: psycopg's
        synchronous COPY is cheaper per row than its asyncio one, and the event loop (the
        collectors) keeps running while the server works."""
        rows, invalid = screen_rows(list(map(as_row, batch)))
        delays = iter(self.backoff.delays())
        announce = self.notify
        while True:
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(self._store, rows, invalid, announce)
            except Exception as exc:
                if announce and getattr(exc, "sqlstate", None) == QUEUE_FULL_STATE:
                    # a listener stopped reading: storing matters more than announcing
                    log.error("the live feed's NOTIFY queue is full; batch stored unannounced")
                    metrics.LIVE_UNANNOUNCED.inc(len(rows))
                    announce = False
                    continue
                if is_missing_partition(exc):
                    days = {row[2].astimezone(UTC).date() for row in rows}
                    await asyncio.to_thread(_create_partitions, self.conninfo, days)
                    continue
                if not is_temporary(exc):
                    raise
                await self._drop_connection()
                state = getattr(exc, "sqlstate", None) or "connection"
                metrics.WRITE_RETRIES.labels(state).inc()
                delay = next(delays)
                log.warning(
                    "writing %d readings failed (%s: %s); retrying in %.1f s",
                    len(rows),
                    type(exc).__name__,
                    str(exc).strip(),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.ROWS_WRITTEN.inc(result.written)
            metrics.ROWS_DUPLICATE.inc(result.duplicates)
            self.totals.written += result.written
            self.totals.duplicates += result.duplicates
            self.totals.dead += result.dead
            return result

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    # -- the database side (runs in the worker thread) -------------------------------------

    def _store(
        self, rows: list[Row], invalid: list[tuple[Row, str]], announce: bool = False
    ) -> WriteResult:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo)
        conn = self._conn
        result = WriteResult()
        with conn.transaction():
            for row, reason in invalid:
                _dead_letter(conn, row, "InvalidReading", reason, result)
            if rows:
                _write_isolating(conn, rows, result)
            if announce and result.new_rows:
                notify(conn, reading_payloads(result.new_rows))
        return result


def _write_isolating(conn: psycopg.Connection, rows: list[Row], result: WriteResult) -> None:
    """Write `rows` in a savepoint; on a permanent error bisect until the bad rows are alone,
    and dead-letter those."""
    try:
        with conn.transaction():
            inserted, losers = _insert_idempotent(conn, rows, result.new_rows)
        result.written += inserted
        result.duplicates += len(rows) - inserted - len(losers)
        for row, kept in losers:
            reason = (
                f"DuplicateInBatch: {kept[3]!r} (quality {kept[4]}) arrived first for this"
                f" device, quantity and time and is kept; this {row[3]!r} (quality {row[4]})"
                " is not"
            )
            _dead_letter(conn, row, "DuplicateInBatch", reason, result)
    except Exception as exc:
        if is_temporary(exc) or is_missing_partition(exc):
            raise
        if len(rows) > 1:
            mid = len(rows) // 2
            _write_isolating(conn, rows[:mid], result)
            _write_isolating(conn, rows[mid:], result)
            return
        _dead_letter(conn, rows[0], type(exc).__name__, _reason(exc), result)


def _dead_letter(
    conn: psycopg.Connection, row: Row, kind: str, reason: str, result: WriteResult
) -> None:
    log.error("dead-lettered reading %r: %s", row, reason)
    conn.execute(INSERT_SQL, dead_letter_row(DeadLetter("writer", reason, row_payload(row))))
    metrics.ROWS_DEAD.labels(kind).inc()
    result.dead += 1


def _copy(conn: psycopg.Connection, table: str, rows: list[Row]) -> int:
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} {_COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)
        return cur.rowcount


def _insert_idempotent(
    conn: psycopg.Connection, rows: list[Row], new_rows: list[Row]
) -> tuple[int, list]:
    """Insert rows, skipping those already stored; return how many were new and the
    in-batch conflicts as (loser, kept) pairs (rows must be sorted stably by key). The new
    rows are appended to `new_rows`."""
    try:
        with conn.transaction():
            copied = _copy(conn, "readings", rows)
        new_rows.extend(rows)
        return copied, []
    except pgerr.UniqueViolation:
        pass
    rows, losers = _first_of_each_key(rows)
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS readings_staging"
        " (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE readings_staging")
    _copy(conn, "readings_staging", rows)
    cur = conn.execute(
        f"INSERT INTO readings {_COLUMNS} SELECT {_COLUMNS[1:-1]} FROM readings_staging"
        f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS[1:-1]}"
    )
    new_rows.extend(cur.fetchall())
    return cur.rowcount, losers


def _first_of_each_key(rows: list[Row]) -> tuple[list[Row], list[tuple[Row, Row]]]:
    """Rows sorted stably by key → the first of each key, and the later rows that differ
    from it as (loser, kept); later identical rows are dropped (plain duplicates)."""
    kept: list[Row] = []
    losers: list[tuple[Row, Row]] = []
    first: Row | None = None
    for row in rows:
        if first is not None and row[:3] == first[:3]:
            if row[3:] != first[3:]:
                losers.append((row, first))
            continue
        kept.append(row)
        first = row
    return kept, losers


def _create_partitions(conninfo: str, days: set) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_partitions(conn, days)


def _reason(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{f' [{state}]' if state else ''}: {text}"
