"""Polls every meter of one RS-485 bus, strictly one request at a time.

One `Dlt645BusCollector` per bus, each in its own task, so buses run in parallel. It owns the
bus's loop and composes one job per kind of read (each its own module):

* instants (instants.py), every `instant_interval`: the instantaneous DIs and then the event
  counters (events.py); a changed counter fetches the new records;
* clock (clock.py), once a day and at start: clock check, broadcast sync within the bound;
* history (history.py), once a day and at start, one meter after each instant round:
  yesterday's frozen registers and load records, then the re-read (补抄) of what is missing;
* commands (commands.py): discovery and relay control, on request.

Which DIs each job reads is the DI table's groups (dataids.toml). Readings go to the `sink`,
everything else (events, read outcomes, gap searches) to the `store`; one meter's failure
never stops the bus.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta

import psycopg

from collectors import metrics
from collectors.base import ReadingSink
from collectors.dlt645.clock import ClockJob
from collectors.dlt645.codec import Frame, RelayAction, Status3
from collectors.dlt645.commands import CommandsJob
from collectors.dlt645.context import PROTOCOL, BusContext, BusPolicy, MeterRef
from collectors.dlt645.events import EventsJob
from collectors.dlt645.history import HistoryJob
from collectors.dlt645.instants import InstantsJob
from collectors.dlt645.session import Dlt645Bus
from collectors.exceptions import DeviceError
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.readstats import ReadOutcome
from ingest.store import CollectorStore

log = logging.getLogger(__name__)

__all__ = ["BusPolicy", "Dlt645BusCollector", "MeterRef"]


class Dlt645BusCollector:
    protocol = PROTOCOL

    def __init__(
        self,
        *,
        name: str,
        bus: Dlt645Bus,
        meters: Sequence[MeterRef],
        sink: ReadingSink,
        store: CollectorStore,
        timezone: str = DEFAULT_TIMEZONE,
        policy: BusPolicy | None = None,
        now: Callable[[], float] = clock.time,
    ) -> None:
        self.ctx = BusContext(
            name=name,
            bus=bus,
            meters=meters,
            sink=sink,
            store=store,
            timezone=timezone,
            policy=policy or BusPolicy(),
            now=now,
        )
        self.events = EventsJob(self.ctx)
        self.instants = InstantsJob(self.ctx, self.events)
        self.clock = ClockJob(self.ctx)
        self.history = HistoryJob(self.ctx)
        self.commands = CommandsJob(self.ctx)
        metrics.declare(PROTOCOL)

    @property
    def name(self) -> str:
        return self.ctx.name

    @property
    def bus(self) -> Dlt645Bus:
        return self.ctx.bus

    @property
    def meters(self) -> list[MeterRef]:
        return self.ctx.meters

    @property
    def policy(self) -> BusPolicy:
        return self.ctx.policy

    @property
    def tz(self):
        return self.ctx.tz

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled. Instants on their grid; once a day the clock check, then the
        heavy reads (yesterday's frozen data and curve, 补抄) one meter after each instant
        round, so they never hold the bus for long. While the port is lost, each round is a
        reopen attempt, after the policy's growing `reopen` delays."""
        loop = asyncio.get_running_loop()
        interval = self.policy.instant_interval
        next_daily = next_instant = loop.time()
        pending: list[MeterRef] = []
        reopen: Iterator[float] | None = None
        try:
            while True:
                await self._guard(self.poll_all)
                if self.instants.bus_lost is not None:  # try again soon, then less often
                    reopen = reopen or self.policy.reopen.delays()
                    await asyncio.sleep(next(reopen))
                    continue
                reopen = None
                if loop.time() >= next_daily:
                    await self._guard(self.check_clocks)
                    pending = list(self.meters)
                    next_daily += self.policy.daily_interval
                if pending:
                    meter = pending.pop(0)
                    await self._guard(lambda m=meter: self.daily_reads(m))
                next_instant += interval
                now = loop.time()
                if next_instant < now:  # overran: skip the missed slots
                    next_instant += ((now - next_instant) // interval + 1) * interval
                await asyncio.sleep(max(0.0, next_instant - loop.time()))
        finally:
            await self.bus.transport.close()

    async def _guard(self, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except (DeviceError, psycopg.Error) as exc:  # a meter, the bus or the store: next round
            log.warning("bus %s: %s failed: %s", self.name, job.__name__, exc)
        except Exception:
            metrics.POLL_ERRORS.labels(PROTOCOL, "internal").inc()
            log.exception("bus %s: %s crashed", self.name, job.__name__)

    # -- the jobs, by name (tests, commands) -----------------------------------------------

    async def poll_all(self) -> list[ReadOutcome]:
        return await self.instants.poll_all()

    async def poll_meter(self, meter: MeterRef) -> ReadOutcome:
        return await self.instants.poll_meter(meter)

    async def check_clocks(self) -> dict[str, float]:
        return await self.clock.check_clocks()

    async def read_daily(self) -> None:
        """Every meter's daily reads at once (tests, commands); `run` spreads them out."""
        for meter in self.meters:
            await self.history.daily_reads(meter)

    async def daily_reads(self, meter: MeterRef) -> None:
        await self.history.daily_reads(meter)

    async def reread(self, meter: MeterRef, *, days: int | None = None) -> dict[str, int]:
        return await self.history.reread(meter, days=days)

    async def discover(self) -> list[str]:
        return await self.commands.discover()

    async def relay(
        self,
        meter: MeterRef,
        action: RelayAction,
        *,
        password: str,
        operator: str,
        valid_for: timedelta = timedelta(minutes=10),
    ) -> Frame:
        return await self.commands.relay(
            meter, action, password=password, operator=operator, valid_for=valid_for
        )

    async def relay_state(self, meter: MeterRef) -> tuple[Status3, Frame]:
        return await self.commands.relay_state(meter)
