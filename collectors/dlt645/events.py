"""The event job: a meter's event counters (the DI table's "event" group); a counter that
went up fetches its new records, stored once as events."""

from __future__ import annotations

import logging

from collectors.dlt645.context import BusContext, MeterRef
from collectors.dlt645.dataids import DataId, group, nth
from collectors.exceptions import DeviceRejected
from ingest.model import Event

log = logging.getLogger(__name__)


class EventsJob:
    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.counters = group("event")

    async def check(self, meter: MeterRef) -> None:
        """Each counter on its own: one the meter refuses does not stop the others; a
        silent meter (timeout) ends the check, keeping the events found so far."""
        events: list[Event] = []
        try:
            for counter in self.counters:
                try:
                    events.extend(await self._new_events(meter, counter))
                except DeviceRejected as exc:
                    log.debug("%s: counter %s: %s", meter.name, counter.event, exc)
        finally:
            if events:
                await self.ctx.store.add_events(events)
                log.info(
                    "meter %s: %d new event(s): %s",
                    meter.name,
                    len(events),
                    ", ".join(e.kind for e in events),
                )

    async def _new_events(self, meter: MeterRef, counter: DataId) -> list[Event]:
        ctx = self.ctx
        state = ctx.state[meter.address]
        kind = counter.event
        [[(_, count)]] = await ctx.read(meter, counter.di)
        if count is None:  # FF: the meter does not keep this counter
            raise DeviceRejected(f"meter {meter.address}: {kind} counter not available")
        count = int(count)
        known = state.event_counts.get(kind)
        if known is None:
            known = await ctx.store.count_events(meter.device_id, kind)
        new = min(count - known, ctx.policy.max_event_records) if count > known else 0
        events = []
        for n in range(1, new + 1):
            [[(_, start), (_, end)]] = await ctx.read(meter, nth(counter.records, n))
            if start is None:
                continue  # a record the meter cannot give: the counter still moves on
            events.append(
                Event(
                    meter.device_id,
                    ctx.utc(start),
                    kind,
                    {
                        "end": ctx.utc(end).isoformat() if end is not None else None,
                        "counter": count - n + 1,
                    },
                )
            )
        state.event_counts[kind] = count
        return events
