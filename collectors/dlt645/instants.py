"""The instant job: every meter's instantaneous DIs (energy registers, voltages, currents,
power, PF, frequency) each round, then its event counters; one outcome per meter in the read
statistics (抄表成功率).

A meter that refuses a block DI is asked its single items instead, and keeps being asked so
(remembered per meter). A meter counts as read only when the policy's required quantities
arrived. A lost port fails the round for every meter of the bus (counted in
``gridread_dlt645_bus_failures_total``); the collector's loop reopens it with backoff."""

from __future__ import annotations

import logging
import time as clock
from datetime import datetime
from decimal import Decimal

from prometheus_client import Counter

from collectors import metrics
from collectors.dlt645.context import PROTOCOL, BusContext, MeterRef
from collectors.dlt645.dataids import singles
from collectors.dlt645.events import EventsJob
from collectors.exceptions import DeviceError, DeviceRejected, DeviceUnreachable
from ingest.model import Quality
from ingest.readstats import ReadOutcome

log = logging.getLogger(__name__)

BUS_FAILURES = Counter(
    "gridread_dlt645_bus_failures", "Rounds in which a DL/T 645 bus's port was lost", ["bus"]
)


class InstantsJob:
    def __init__(self, ctx: BusContext, events: EventsJob) -> None:
        self.ctx = ctx
        self.events = events
        self.bus_lost: DeviceUnreachable | None = None  # the last round's lost port, if any
        self._last_error: DeviceError | None = None

    async def poll_all(self) -> list[ReadOutcome]:
        ctx = self.ctx
        outcomes: list[ReadOutcome] = []
        lost: DeviceUnreachable | None = None
        for meter in ctx.meters:
            if lost is not None:  # the port is gone: no bus time to spend, same failure
                outcomes.append(self._outcome(meter, ctx.now_utc(), lost, set()))
                continue
            outcome = await self.poll_meter(meter)
            outcomes.append(outcome)
            if isinstance(self._last_error, DeviceUnreachable):
                lost = self._last_error
        if lost is not None:
            BUS_FAILURES.labels(ctx.name).inc()
            if self.bus_lost is None:
                log.warning("bus %s: port lost: %s (reopening with backoff)", ctx.name, lost)
        elif self.bus_lost is not None:
            log.info("bus %s: port back", ctx.name)
        self.bus_lost = lost
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
        try:
            for di in ctx.policy.instant_dis:
                values.extend(await self._read_item(meter, di))
        except DeviceError as exc:
            error = exc  # a silent, garbling or lost meter: no more bus time on it this round
        if error is None and values:
            try:
                await self.events.check(meter)
            except DeviceError as exc:
                log.debug("%s: event counters: %s", meter.name, exc)
        if values:
            readings = ctx.readings(meter, ts, values, Quality.GOOD)
            await ctx.sink.add_many(readings)
            metrics.READINGS_COLLECTED.labels(PROTOCOL).inc(len(readings))
        self._last_error = error
        outcome = self._outcome(meter, ts, error, {q for q, _ in values})
        if outcome.ok:
            metrics.POLL_SECONDS.labels(PROTOCOL).observe(clock.perf_counter() - started)
        return outcome

    async def _read_item(self, meter: MeterRef, di: int) -> list[tuple[str, Decimal]]:
        """One instant DI's values (FF items left out); a refused block is read item by
        item, and remembered so for this meter. A refused item is a config matter: none."""
        ctx = self.ctx
        state = ctx.state[meter.address]
        items = singles(di)
        if di in state.singles:
            return [v for item in items for v in await self._read_item(meter, item)]
        try:
            records = await ctx.read(meter, di)
        except DeviceRejected as exc:
            if not items:
                log.debug("%s: %s", meter.name, exc)
                return []
            log.info("meter %s refuses block DI %08X: reading its items", meter.name, di)
            state.singles.add(di)
            return await self._read_item(meter, di)
        return [(q, v) for q, v in records[0] if isinstance(v, Decimal)]

    def _outcome(
        self, meter: MeterRef, ts: datetime, error: DeviceError | None, got: set[str]
    ) -> ReadOutcome:
        ctx = self.ctx
        lacking = [q for q in ctx.policy.required if q not in got]
        if error is not None:
            reason = f"{error.kind}: {error}"
        elif lacking:
            reason = f"incomplete: required {', '.join(lacking)} not read"
        else:
            reason = None
        metrics.POLLS.labels(PROTOCOL, "failed" if reason else "ok").inc()
        if reason and not isinstance(error, DeviceUnreachable):
            log.warning(
                "bus %s: meter %s (%s) not read: %s", ctx.name, meter.name, meter.address, reason
            )
        return ReadOutcome(
            day=ts.astimezone(ctx.tz).date(),
            bus=ctx.name,
            device_id=meter.device_id,
            ok=reason is None,
            at=ts,
            error=reason,
        )
