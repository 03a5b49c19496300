"""The history job: what the meter keeps in memory. Once a day yesterday's daily frozen
registers and load records (the DI table's "frozen" and "curve" groups) as normal reads, then
the re-read (补抄) of the frozen days and curve points of the last days that are missing,
stored with the RE_READ flag. These readings carry the meter's own timestamps, so they get
CLOCK_SUSPECT while the meter's clock is known to be off beyond the bound."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from collectors import metrics
from collectors.dlt645.context import PROTOCOL, BusContext, MeterRef
from collectors.dlt645.dataids import group, nth
from collectors.exceptions import DeviceError, DeviceRejected
from ingest.gaps import grid
from ingest.model import Quality, Reading

log = logging.getLogger(__name__)


class HistoryJob:
    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        frozen = group("frozen")
        self.freeze_time = next(e for e in frozen if e.fields[0][0].is_time).key
        self.frozen_registers = [e.key for e in frozen if not e.fields[0][0].is_time]
        self.frozen_quantity = "1.8.0*d"  # the register whose presence marks a frozen day
        [curve] = group("curve")
        self.curve_di = curve.di
        self.curve_quantity = "1.8.0"

    async def daily_reads(self, meter: MeterRef) -> None:
        """Yesterday's frozen registers and load records (normal reads), then the re-read of
        whatever the last days still lack.

        The sink need not be the writer (it may store later, elsewhere), so the gap search
        cannot rely on the store having what was just read: what this run handed to the
        sink is taken off what the store reports missing."""
        ctx = self.ctx
        step = ctx.policy.curve_step
        today = ctx.now_local().replace(hour=0, minute=0, second=0, microsecond=0)
        handed: set[tuple[str, datetime]] = set()
        try:
            await self.read_frozen(meter, 1, Quality.GOOD, handed)
            points = grid(today - timedelta(days=1), today, step)
            await self.read_curve(meter, points, Quality.GOOD, handed)
            await self.reread(meter, handed=handed)
        except DeviceError as exc:
            log.warning("meter %s: daily read failed: %s", meter.name, exc)

    async def read_frozen(
        self,
        meter: MeterRef,
        days_back: int,
        quality: Quality,
        handed: set[tuple[str, datetime]] | None = None,
    ) -> datetime:
        """Read the daily freeze `days_back` (1 = the latest); store its registers at the
        freeze instant. Returns the freeze time (UTC)."""
        ctx = self.ctx
        [[(_, frozen_at)]] = await ctx.read(meter, nth(self.freeze_time, days_back))
        if not isinstance(frozen_at, datetime):  # FF: the meter has no such freeze
            raise DeviceRejected(f"meter {meter.address}: freeze {days_back} not available")
        ts = ctx.utc(frozen_at)
        quality = self._quality(meter, quality)
        readings = []
        for pattern in self.frozen_registers:
            [values] = await ctx.read(meter, nth(pattern, days_back))
            readings.extend(
                Reading(meter.device_id, q, ts, float(v), int(quality))
                for q, v in values
                if isinstance(v, Decimal)
            )
        await ctx.sink.add_many(readings)
        _note(handed, readings)
        return ts

    async def read_curve(
        self,
        meter: MeterRef,
        points_local: list[datetime],
        quality: Quality,
        handed: set[tuple[str, datetime]] | None = None,
    ) -> int:
        """Read the load records at these local instants, in runs of ≤ records_per_read."""
        ctx = self.ctx
        count = 0
        quality = self._quality(meter, quality)
        points_local = [p.replace(tzinfo=None) for p in points_local]  # the meter speaks local
        for run in _runs(points_local, ctx.policy.curve_step, ctx.policy.records_per_read):
            records = await ctx.read(meter, self.curve_di, blocks=len(run), start=run[0])
            wanted = set(run)
            readings = []
            for record in records:
                (_, at), *values = record
                if at not in wanted:  # also a record whose time is FF (not available)
                    continue
                ts = ctx.utc(at)
                readings.extend(
                    Reading(meter.device_id, q, ts, float(v), int(quality))
                    for q, v in values
                    if isinstance(v, Decimal)
                )
            await ctx.sink.add_many(readings)
            _note(handed, readings)
            count += len(readings)
        return count

    async def reread(
        self,
        meter: MeterRef,
        *,
        days: int | None = None,
        handed: set[tuple[str, datetime]] | frozenset = frozenset(),
    ) -> dict[str, int]:
        """补抄: fill the frozen days and curve points of the last `days` days that the store
        lacks, from the meter's memory, flagged RE_READ; `handed` (quantity, UTC instant) were
        given to the sink already and are not asked again. Returns what was asked and
        restored."""
        ctx = self.ctx
        step = ctx.policy.curve_step
        days = days or ctx.policy.reread_days
        now_local = ctx.now_local()
        today = now_local.replace(hour=0, minute=0, second=0, microsecond=0)
        midnights = [today - timedelta(days=n) for n in range(days)]
        # the newest complete interval: a record for t exists once t has passed
        minutes = int(step.total_seconds() // 60)
        last = now_local.replace(
            minute=now_local.minute // minutes * minutes, second=0, microsecond=0
        )
        points = grid(today - timedelta(days=days - 1), last + step, step)
        frozen_gaps = await self._missing(meter, self.frozen_quantity, midnights, handed)
        curve_gaps = await self._missing(meter, self.curve_quantity, points, handed)
        restored_frozen = 0
        for ts in frozen_gaps:
            days_back = (today.date() - ts.astimezone(ctx.tz).date()).days + 1
            try:
                await self.read_frozen(meter, days_back, Quality.RE_READ)
                restored_frozen += 1
            except DeviceRejected:
                log.info(
                    "meter %s has no frozen data for %s", meter.name, ts.astimezone(ctx.tz).date()
                )
        local_points = [ts.astimezone(ctx.tz).replace(tzinfo=None) for ts in curve_gaps]
        restored = await self.read_curve(meter, local_points, Quality.RE_READ)
        metrics.READS_RESTORED.labels(PROTOCOL).inc(restored + 5 * restored_frozen)
        log.info(
            "re-read %s: missing %d frozen days, %d curve points; restored %d days, %d readings",
            meter.name,
            len(frozen_gaps),
            len(curve_gaps),
            restored_frozen,
            restored,
        )
        return {
            "frozen_missing": len(frozen_gaps),
            "frozen_restored": restored_frozen,
            "curve_missing": len(curve_gaps),
            "curve_readings_restored": restored,
        }

    def _quality(self, meter: MeterRef, quality: Quality) -> Quality:
        return quality | Quality.CLOCK_SUSPECT if self.ctx.clock_off(meter) else quality

    async def _missing(
        self,
        meter: MeterRef,
        quantity: str,
        expected_local: list[datetime],
        handed: set[tuple[str, datetime]] | frozenset,
    ) -> list[datetime]:
        expected = [t.astimezone(UTC) for t in expected_local]
        missing = await self.ctx.store.missing_instants(meter.device_id, quantity, expected)
        return [ts for ts in missing if (quantity, ts) not in handed]


def _note(handed: set[tuple[str, datetime]] | None, readings: list[Reading]) -> None:
    if handed is not None:
        handed.update((r.quantity, r.ts) for r in readings)


def _runs(points: list[datetime], step: timedelta, limit: int) -> list[list[datetime]]:
    """Split sorted instants into runs of consecutive grid points, at most `limit` long."""
    runs: list[list[datetime]] = []
    for p in sorted(points):
        if runs and p - runs[-1][-1] == step and len(runs[-1]) < limit:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs
