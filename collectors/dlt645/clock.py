"""The clock job: read every meter's clock (the DI table's "clock" group: date, then time);
one broadcast time sync for the meters within the drift bound; a meter beyond it raises a
``clock_drift`` event, is not corrected automatically (a field visit decides), and its
readings carry CLOCK_SUSPECT until it is back in bound."""

from __future__ import annotations

import logging
from datetime import date, datetime, time

from collectors.dlt645 import codec
from collectors.dlt645.context import BusContext, MeterRef
from collectors.dlt645.dataids import group
from collectors.exceptions import DeviceError, FrameError
from ingest.model import Event

log = logging.getLogger(__name__)

SYNC_THRESHOLD_S = 1.0  # below this a broadcast would only add noise


def _clock_dis() -> tuple[int, int]:
    """(date DI, time DI) of the "clock" group, told apart by their formats."""
    by_format = {e.fields[0][0].text: e.di for e in group("clock")}
    return by_format["YYMMDDWW"], by_format["hhmmss"]


class ClockJob:
    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.date_di, self.time_di = _clock_dis()

    async def check_clocks(self) -> dict[str, float]:
        """Each meter's drift (seconds, meter minus head end), by address."""
        ctx = self.ctx
        bound = ctx.policy.clock_bound
        drifts: dict[str, float] = {}
        events: list[Event] = []
        for meter in ctx.meters:
            try:
                drift = await self.drift(meter)
            except DeviceError as exc:
                log.debug("%s: clock not read: %s", meter.name, exc)
                continue
            drifts[meter.address] = drift
            ctx.state[meter.address].clock_drift = drift
            if abs(drift) > bound:
                events.append(
                    Event(
                        meter.device_id,
                        ctx.now_utc().replace(microsecond=0),
                        "clock_drift",
                        {"drift_s": round(drift, 1), "bound_s": bound},
                    )
                )
                log.warning(
                    "meter %s clock is off by %+.0f s (bound %g s): not corrected",
                    meter.name,
                    drift,
                    bound,
                )
        if any(SYNC_THRESHOLD_S < abs(d) <= bound for d in drifts.values()):
            await ctx.bus.exchange(
                codec.broadcast_time_request(ctx.now_local()), expect_reply=False
            )
            for address, d in drifts.items():
                if abs(d) <= bound:
                    ctx.state[address].clock_drift = 0.0
        if events:
            await ctx.store.add_events(events)
        return drifts

    async def drift(self, meter: MeterRef) -> float:
        ctx = self.ctx
        [[(_, day)]] = await ctx.read(meter, self.date_di)
        before = ctx.now()
        [[(_, tod)]] = await ctx.read(meter, self.time_di)
        after = ctx.now()
        if not (isinstance(day, date) and isinstance(tod, time)):
            raise FrameError(f"meter {meter.address}: clock not available ({day}, {tod})")
        meter_time = datetime.combine(day, tod, ctx.tz).timestamp()
        # the meter read its clock about midway through the exchange; it truncates to whole
        # seconds, so on average it is half a second further on than it says
        return meter_time + 0.5 - (before + after) / 2
