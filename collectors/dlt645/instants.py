"""The instant job: every meter's instantaneous DIs (energy registers, voltages, currents,
power, PF, frequency) each round, then its event counters; one outcome per meter in the read
statistics (抄表成功率)."""

from __future__ import annotations

import logging
import time as clock
from decimal import Decimal

from collectors import metrics
from collectors.dlt645.context import PROTOCOL, BusContext, MeterRef
from collectors.dlt645.events import EventsJob
from collectors.exceptions import DeviceError, DeviceRejected
from ingest.model import Quality
from ingest.readstats import ReadOutcome

log = logging.getLogger(__name__)


class InstantsJob:
    def __init__(self, ctx: BusContext, events: EventsJob) -> None:
        self.ctx = ctx
        self.events = events

    async def poll_all(self) -> list[ReadOutcome]:
        ctx = self.ctx
        outcomes = [await self.poll_meter(m) for m in ctx.meters]
        await ctx.store.record_outcomes(outcomes)
        if outcomes:
            for rate in await ctx.store.success_rates(outcomes[0].day, ctx.name):
                if rate["rate"] is not None:
                    metrics.READ_SUCCESS.labels(ctx.name).set(rate["rate"])
        return outcomes

    async def poll_meter(self, meter: MeterRef) -> ReadOutcome:
        """Read a meter's instantaneous DIs and event counters; hand the readings to the sink."""
        ctx = self.ctx
        started = clock.perf_counter()
        ts = ctx.now_utc()
        values: list[tuple[str, Decimal]] = []
        error: DeviceError | None = None
        for di in ctx.policy.instant_dis:
            try:
                records = await ctx.read(meter, di)
            except DeviceRejected as exc:  # the meter lacks this item: a config matter
                log.debug("%s: %s", meter.name, exc)
                continue
            except DeviceError as exc:
                error = exc
                break  # a silent or garbling meter: spend no more bus time on it this round
            values.extend((q, v) for q, v in records[0] if isinstance(v, Decimal))
        if error is None and values:
            try:
                await self.events.check(meter)
            except DeviceError as exc:
                log.debug("%s: event counters: %s", meter.name, exc)
        ok = error is None and bool(values)
        if values:
            readings = ctx.readings(meter, ts, values, Quality.GOOD)
            await ctx.sink.add_many(readings)
            metrics.READINGS_COLLECTED.labels(PROTOCOL).inc(len(readings))
        if ok:
            metrics.POLLS.labels(PROTOCOL, "ok").inc()
            metrics.POLL_SECONDS.labels(PROTOCOL).observe(clock.perf_counter() - started)
        else:
            metrics.POLLS.labels(PROTOCOL, "failed").inc()
            kind = error.kind if error else "no_data"
            log.warning(
                "bus %s: meter %s (%s) not read: %s",
                ctx.name,
                meter.name,
                meter.address,
                error or kind,
            )
        return ReadOutcome(
            day=ts.astimezone(ctx.tz).date(),
            bus=ctx.name,
            device_id=meter.device_id,
            ok=ok,
            at=ts,
            error=None if ok else f"{error.kind if error else 'no_data'}: {error or 'no values'}",
        )
