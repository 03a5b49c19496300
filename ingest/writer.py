"""The batch writer: a bounded queue of readings, flushed to PostgreSQL with binary COPY.

How one batch is written (all in one transaction):

1. Sort the rows in primary-key order (the index then grows at its right edge: about twice
   the COPY rate of arrival order).
2. COPY them straight into ``readings`` inside a savepoint. Conflicts are rare (re-reads,
   replays, retries after an unknown commit outcome), so this is the path nearly every batch
   takes, at raw COPY speed.
3. Only if that raises a unique violation: roll back to the savepoint, COPY into a temporary
   staging table and ``INSERT … ON CONFLICT DO NOTHING``. A replayed batch never duplicates.

Errors:

* temporary (connection lost, server shutting down, serialisation failure, out of resources —
  by SQLSTATE class) → reconnect and retry the whole batch with capped exponential backoff;
  the queue stays bounded, so producers wait instead of memory growing;
* a day with no partition yet → create it and retry;
* anything else is permanent for some rows: bisect the batch in savepoints until the bad rows
  are isolated, park each in ``dead_letters`` with the reason, commit the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import errors as pgerr

from ingest import metrics
from ingest.model import Reading
from ingest.retry import Backoff
from ingest.schema import ensure_partitions

log = logging.getLogger(__name__)

_COLUMNS = "(device_id, quantity, ts, value, quality)"
_TYPES = ["int4", "text", "timestamptz", "float8", "int2"]
# SQLSTATE classes worth retrying: connection exception, transaction rollback, insufficient
# resources, operator intervention (admin shutdown, crash recovery), system error.
_TEMPORARY_CLASSES = {"08", "40", "53", "57", "58"}
_TEMPORARY_STATES = {"55P03"}  # lock not available

Row = tuple[int, str, datetime, float, int]


@dataclass
class WriteResult:
    written: int = 0
    duplicates: int = 0
    dead: int = 0


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
    ) -> None:
        self.conninfo = conninfo
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.max_queued = max_queued
        self.backoff = backoff or Backoff()
        self._buffer: list[Reading] = []
        self._cond = asyncio.Condition()
        self._accepted = 0  # readings taken into the queue, ever
        self._done = 0  # readings written, found duplicate or dead-lettered, ever
        self._flush_wanted = False
        self._closing = False
        self._conn: psycopg.AsyncConnection | None = None
        self.totals = WriteResult()

    # -- producer side -------------------------------------------------------------------

    async def add(self, reading: Reading) -> None:
        await self.add_many((reading,))

    async def add_many(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        async with self._cond:
            await self._cond.wait_for(lambda: len(self._buffer) < self.max_queued)
            self._buffer.extend(readings)
            self._accepted += len(readings)
            metrics.QUEUE_DEPTH.set(len(self._buffer))
            if len(self._buffer) >= self.batch_size:
                self._cond.notify_all()

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
                    try:
                        await asyncio.wait_for(
                            self._cond.wait_for(
                                lambda: (
                                    len(self._buffer) >= self.batch_size
                                    or self._flush_wanted
                                    or self._closing
                                )
                            ),
                            self.max_delay,
                        )
                    except TimeoutError:
                        pass
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
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

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
        """Write one batch, retrying temporary errors until it is stored."""
        rows = [r.row for r in batch]
        try:
            rows.sort()
        except TypeError:  # a malformed reading; it will be isolated and dead-lettered
            pass
        delays = iter(self.backoff.delays())
        while True:
            started = time.perf_counter()
            try:
                conn = await self._connection()
                result = await self._write_rows(conn, rows)
            except Exception as exc:
                if _missing_partition(exc):
                    await self._drop_connection()
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

    # -- the database side ---------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.conninfo)
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            finally:
                self._conn = None

    async def _write_rows(self, conn: psycopg.AsyncConnection, rows: list[Row]) -> WriteResult:
        result = WriteResult()
        async with conn.transaction():
            await self._write_isolating(conn, rows, result)
        return result

    async def _write_isolating(
        self, conn: psycopg.AsyncConnection, rows: list[Row], result: WriteResult
    ) -> None:
        """Write `rows` in a savepoint; on a permanent error bisect until the bad rows are
        alone, and dead-letter those."""
        try:
            async with conn.transaction():
                inserted = await _insert_idempotent(conn, rows)
            result.written += inserted
            result.duplicates += len(rows) - inserted
        except Exception as exc:
            if is_temporary(exc) or _missing_partition(exc):
                raise
            if len(rows) > 1:
                mid = len(rows) // 2
                await self._write_isolating(conn, rows[:mid], result)
                await self._write_isolating(conn, rows[mid:], result)
                return
            reason = _reason(exc)
            log.error("dead-lettered reading %r: %s", rows[0], reason)
            await conn.execute(
                "INSERT INTO dead_letters (source, reason, payload) VALUES (%s, %s, %s)",
                ("writer", reason, json.dumps(_row_payload(rows[0]))),
            )
            metrics.ROWS_DEAD.labels(type(exc).__name__).inc()
            result.dead += 1


async def _copy(conn: psycopg.AsyncConnection, table: str, rows: list[Row]) -> int:
    async with conn.cursor() as cur:
        async with cur.copy(f"COPY {table} {_COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            for row in rows:
                await copy.write_row(row)
        return cur.rowcount


async def _insert_idempotent(conn: psycopg.AsyncConnection, rows: list[Row]) -> int:
    """Insert rows, skipping those already stored; return how many were new."""
    try:
        async with conn.transaction():
            return await _copy(conn, "readings", rows)
    except pgerr.UniqueViolation:
        pass
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS readings_staging"
        " (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.execute("TRUNCATE readings_staging")
    await _copy(conn, "readings_staging", rows)
    cur = await conn.execute(
        f"INSERT INTO readings {_COLUMNS} SELECT {_COLUMNS[1:-1]} FROM readings_staging"
        " ON CONFLICT DO NOTHING"
    )
    return cur.rowcount


def _missing_partition(exc: BaseException) -> bool:
    return isinstance(exc, pgerr.CheckViolation) and "no partition" in str(exc)


def _create_partitions(conninfo: str, days: set) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_partitions(conn, days)


def _reason(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{f' [{state}]' if state else ''}: {text}"


def _row_payload(row: Row) -> dict[str, object]:
    device_id, quantity, ts, value, quality = row
    return {
        "device_id": device_id,
        "quantity": quantity,
        "ts": ts.isoformat() if isinstance(ts, datetime) else repr(ts),
        "value": repr(value),
        "quality": quality,
    }
