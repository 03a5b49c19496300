"""The store collectors are given next to their sink: everything they write besides readings
(events, read outcomes, a voltage monitor's daily statistics, dead letters) and what they ask
(the devices, what is missing, how many events are known). Narrow on purpose, so a collector
can run against a remote store later and tests can see every call.

`PgCollectorStore` is the PostgreSQL one, over a shared `psycopg_pool.AsyncConnectionPool`:
no collector opens its own connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple, Protocol

from psycopg_pool import AsyncConnectionPool

from ingest import concentrators as conc
from ingest import deadletters as dl
from ingest.deadletters import DEFAULT_RAW_MAX, DeadLetter
from ingest.events import COUNT_SQL, INSERT_SQL, event_row
from ingest.gaps import MISSING_SQL
from ingest.live import anotify, event_payloads
from ingest.model import Event
from ingest.readstats import RECORD_SQL, SUCCESS_RATES_SQL, ReadOutcome, outcome_rows, rates
from ingest.writer import is_temporary

log = logging.getLogger(__name__)


class KnownDevice(NamedTuple):
    id: int
    commissioned: datetime | None  # readings dated earlier are implausible


DEVICES_SQL = "SELECT name, id, attributes->>'commissioned' FROM devices"


@dataclass(frozen=True)
class VoltageDayStats:
    """A voltage monitor's own statistics of one local day (voltage_daily_stats)."""

    device_id: int
    day: date
    monitoring_class: str
    nominal_v: float
    upper_v: float
    lower_v: float
    monitored_min: int
    over_min: int
    under_min: int
    max_v: float
    max_at: datetime
    min_v: float
    min_at: datetime


VOLTAGE_STATS_SQL = """
    INSERT INTO voltage_daily_stats (device_id, day, monitoring_class, nominal_v, upper_v,
        lower_v, monitored_min, over_min, under_min, max_v, max_at, min_v, min_at)
    VALUES (%(device_id)s, %(day)s, %(monitoring_class)s, %(nominal_v)s, %(upper_v)s,
        %(lower_v)s, %(monitored_min)s, %(over_min)s, %(under_min)s, %(max_v)s, %(max_at)s,
        %(min_v)s, %(min_at)s)
    ON CONFLICT (device_id, day) DO UPDATE SET
        monitored_min = EXCLUDED.monitored_min, over_min = EXCLUDED.over_min,
        under_min = EXCLUDED.under_min, max_v = EXCLUDED.max_v, max_at = EXCLUDED.max_at,
        min_v = EXCLUDED.min_v, min_at = EXCLUDED.min_at, read_at = now()
"""


class CollectorStore(Protocol):
    async def devices(self) -> dict[str, KnownDevice]:
        """Every device by name (a `commissioned` attribute that is not a time: None)."""
        ...

    async def add_dead_letters(
        self, letters: Sequence[DeadLetter], *, raw_max: int = DEFAULT_RAW_MAX
    ) -> None:
        """Store dead letters (raw bytes capped at `raw_max`, their size kept), all or none;
        one the database refuses is stored as `deadletters.refused()` instead. A temporary
        error is raised with nothing stored: call again."""
        ...

    async def add_events(self, events: Sequence[Event]) -> int:
        """Store events not stored yet; return how many were new."""
        ...

    async def count_events(self, device_id: int, kind: str) -> int: ...

    async def record_outcomes(self, outcomes: Sequence[ReadOutcome]) -> None:
        """Count one read attempt per outcome in the read statistics."""
        ...

    async def success_rates(self, day: date, bus: str | None = None) -> list[dict]: ...

    async def missing_instants(
        self, device_id: int, quantity: str, expected: Sequence[datetime]
    ) -> list[datetime]:
        """The instants of `expected` with no stored reading of `quantity`."""
        ...

    async def store_voltage_stats(self, stats: VoltageDayStats) -> None: ...

    async def concentrators(self) -> list[tuple[str, str | None]]:
        """Every concentrator with its own time zone (None: the site's)."""
        ...

    async def meters_with_gaps(
        self, concentrator: str, start: datetime, end: datetime
    ) -> list[str]: ...


class PgCollectorStore:
    """CollectorStore on PostgreSQL. The pool is the caller's (opened and closed by it).
    `notify`: announce new events on the live feed (in the transaction storing them)."""

    def __init__(self, pool: AsyncConnectionPool, *, notify: bool = True) -> None:
        self.pool = pool
        self.notify = notify

    @classmethod
    async def open(
        cls, conninfo: str, *, max_size: int = 4, notify: bool = True
    ) -> PgCollectorStore:
        """A store with its own pool (tests, stand-alone tools); `close()` it."""
        pool = AsyncConnectionPool(conninfo, min_size=1, max_size=max_size, open=False)
        await pool.open(wait=True)
        return cls(pool, notify=notify)

    async def close(self) -> None:
        await self.pool.close()

    async def devices(self) -> dict[str, KnownDevice]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(DEVICES_SQL)
            rows = await cur.fetchall()
        return {name: KnownDevice(i, _commissioned(at)) for name, i, at in rows}

    async def add_dead_letters(
        self, letters: Sequence[DeadLetter], *, raw_max: int = DEFAULT_RAW_MAX
    ) -> None:
        if not letters:
            return
        async with self.pool.connection() as conn, conn.transaction():
            for letter in letters:
                try:
                    async with conn.transaction():  # a savepoint: a refusal undoes this one
                        await conn.execute(dl.INSERT_SQL, dl.dead_letter_row(letter, raw_max))
                except Exception as exc:
                    if is_temporary(exc):
                        raise
                    log.error("a dead letter was refused (%r); storing its raw bytes", exc)
                    stored = dl.dead_letter_row(dl.refused(letter, exc), raw_max)
                    await conn.execute(dl.INSERT_SQL, stored)

    async def add_events(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        new: list[tuple] = []
        async with self.pool.connection() as conn, conn.cursor() as cur:
            for e in events:
                row = event_row(e)
                await cur.execute(INSERT_SQL, row)
                if cur.rowcount:
                    new.append(row)
            if self.notify and new:
                await anotify(conn, event_payloads(new))
        return len(new)

    async def count_events(self, device_id: int, kind: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(COUNT_SQL, (device_id, kind))
            return (await cur.fetchone())[0]

    async def record_outcomes(self, outcomes: Sequence[ReadOutcome]) -> None:
        if not outcomes:
            return
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(RECORD_SQL, outcome_rows(outcomes))

    async def success_rates(self, day: date, bus: str | None = None) -> list[dict]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(SUCCESS_RATES_SQL, {"day": day, "bus": bus})
            return rates(await cur.fetchall(), day)

    async def missing_instants(
        self, device_id: int, quantity: str, expected: Sequence[datetime]
    ) -> list[datetime]:
        if not expected:
            return []
        async with self.pool.connection() as conn:
            cur = await conn.execute(MISSING_SQL, (list(expected), device_id, quantity))
            return [ts for (ts,) in await cur.fetchall()]

    async def store_voltage_stats(self, stats: VoltageDayStats) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(VOLTAGE_STATS_SQL, asdict(stats))

    async def concentrators(self) -> list[tuple[str, str | None]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(conc.CONCENTRATORS_SQL)
            return [(c, tz) for (c, tz) in await cur.fetchall()]

    async def meters_with_gaps(
        self, concentrator: str, start: datetime, end: datetime
    ) -> list[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                conc.GAPS_SQL, {"concentrator": concentrator, "start": start, "end": end}
            )
            return conc.gap_meters(await cur.fetchall(), start, end)


def _commissioned(text: str | None) -> datetime | None:
    """An ISO date or time (a bare one is UTC); anything else: None."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
