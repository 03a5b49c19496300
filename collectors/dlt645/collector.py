"""Polls every meter of one RS-485 bus, strictly one request at a time.

One `Dlt645BusCollector` per bus, each in its own task, so buses run in parallel. What it
reads, and when (local time of the bus):

* every `instant_interval`: the instantaneous DIs (energy registers, voltages, currents,
  power, PF, frequency) and the event counters; a changed counter fetches the new records;
* once a day (and at start): clock check of every meter, then one broadcast time sync for
  the meters within the drift bound; a meter beyond it raises a ``clock_drift`` event, is not
  corrected automatically, and its readings carry CLOCK_SUSPECT until it is back in bound;
* once a day (and at start): yesterday's daily frozen registers and 15-minute load records;
* `reread()` (补抄): the frozen days and curve points of the last days missing from the
  database, read back from the meter's memory and stored with the RE_READ flag.

Each meter's poll is counted in ``read_stats`` (the read success rate, 抄表成功率) and in
the metrics; one meter's failure never stops the bus.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg

from collectors import metrics
from collectors.base import ReadingSink
from collectors.dlt645 import codec
from collectors.dlt645.codec import RelayAction
from collectors.dlt645.dataids import nth, table
from collectors.dlt645.session import Dlt645Bus
from collectors.exceptions import DeviceError, DeviceRejected, FrameError
from ingest.events import count_events, store_events
from ingest.gaps import grid, missing_instants
from ingest.model import Event, Quality, Reading
from ingest.quantities import QuantityKind, registry
from ingest.readstats import ReadOutcome, record_outcomes, success_rates

log = logging.getLogger(__name__)
PROTOCOL = "dlt645"

# what "instant" means is data: the DIs tagged so in dataids.toml, in file order
DEFAULT_INSTANT_DIS = tuple(e.di for e in table().values() if e.group == "instant")
EVENT_COUNTERS = {0x03110000: ("power_down", "031100NN"), 0x03300D00: ("cover_open", "03300DNN")}
CURVE_STEP = timedelta(minutes=15)
CURVE_DI = 0x06040001
RECORDS_PER_READ = 9
MAX_EVENT_RECORDS = 10


@dataclass(frozen=True)
class MeterRef:
    device_id: int
    name: str
    address: str


@dataclass(frozen=True)
class BusPolicy:
    instant_interval: float = 300.0
    daily_interval: float = 86_400.0
    retries: int = 1  # further attempts of one exchange after a timeout or garbled reply
    clock_bound: float = 60.0  # seconds of drift tolerated (and corrected by broadcast)
    reread_days: int = 7
    instant_dis: tuple[int, ...] = DEFAULT_INSTANT_DIS


@dataclass
class _MeterState:
    registers: dict[str, Decimal] = field(default_factory=dict)  # last values, for rollover
    event_counts: dict[str, int] = field(default_factory=dict)
    clock_drift: float | None = None  # seconds, meter minus head end


class Dlt645BusCollector:
    protocol = PROTOCOL

    def __init__(
        self,
        *,
        name: str,
        bus: Dlt645Bus,
        meters: Sequence[MeterRef],
        sink: ReadingSink,
        conninfo: str,
        timezone: str = "Asia/Shanghai",
        policy: BusPolicy | None = None,
        now: Callable[[], float] = clock.time,
    ) -> None:
        self.name = name
        self.bus = bus
        self.meters = list(meters)
        self.sink = sink
        self.conninfo = conninfo
        self.tz = ZoneInfo(timezone)
        self.policy = policy or BusPolicy()
        self.now = now
        self._state = {m.address: _MeterState() for m in self.meters}
        metrics.declare(PROTOCOL)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled. Instants on their grid; once a day the clock check, then the
        heavy reads (yesterday's frozen data and curve, 补抄) one meter after each instant
        cycle, so they never hold the bus for long."""
        loop = asyncio.get_running_loop()
        next_daily = next_instant = loop.time()
        pending: list[MeterRef] = []
        try:
            while True:
                await self._guard(self.poll_all)
                if loop.time() >= next_daily:
                    await self._guard(self.check_clocks)
                    pending = list(self.meters)
                    next_daily += self.policy.daily_interval
                if pending:
                    meter = pending.pop(0)
                    await self._guard(lambda m=meter: self.daily_reads(m))
                next_instant += self.policy.instant_interval
                now = loop.time()
                if next_instant < now:  # overran: skip the missed slots
                    missed = (now - next_instant) // self.policy.instant_interval + 1
                    next_instant += missed * self.policy.instant_interval
                await asyncio.sleep(max(0.0, next_instant - loop.time()))
        finally:
            await self.bus.transport.close()

    async def _guard(self, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except (psycopg.Error, DeviceError) as exc:
            log.warning("bus %s: %s failed: %s", self.name, job.__name__, exc)
        except Exception:
            metrics.POLL_ERRORS.labels(PROTOCOL, "internal").inc()
            log.exception("bus %s: %s crashed", self.name, job.__name__)

    # -- instantaneous values and events -------------------------------------------------

    async def poll_all(self) -> list[ReadOutcome]:
        outcomes = [await self.poll_meter(m) for m in self.meters]

        def record(conn: psycopg.Connection) -> list[dict]:
            record_outcomes(conn, outcomes)
            return success_rates(conn, outcomes[0].day, self.name) if outcomes else []

        for rate in await asyncio.to_thread(self._db, record):
            if rate["rate"] is not None:
                metrics.READ_SUCCESS.labels(self.name).set(rate["rate"])
        return outcomes

    async def poll_meter(self, meter: MeterRef) -> ReadOutcome:
        """Read a meter's instantaneous DIs and event counters; hand the readings to the sink."""
        started = clock.perf_counter()
        ts = datetime.fromtimestamp(self.now(), UTC)
        values: list[tuple[str, Decimal]] = []
        error: DeviceError | None = None
        for di in self.policy.instant_dis:
            try:
                records = await self._read(meter, di)
            except DeviceRejected as exc:  # the meter lacks this item: a config matter
                log.debug("%s: %s", meter.name, exc)
                continue
            except DeviceError as exc:
                error = exc
                break  # a silent or garbling meter: spend no more bus time on it this round
            values.extend((q, v) for q, v in records[0] if isinstance(v, Decimal))
        if error is None and values:
            try:
                await self._check_event_counters(meter)
            except DeviceError as exc:
                log.debug("%s: event counters: %s", meter.name, exc)
        ok = error is None and bool(values)
        if values:
            readings = self._readings(meter, ts, values, Quality.GOOD)
            await self.sink.add_many(readings)
            metrics.READINGS_COLLECTED.labels(PROTOCOL).inc(len(readings))
        if ok:
            metrics.POLLS.labels(PROTOCOL, "ok").inc()
            metrics.POLL_SECONDS.labels(PROTOCOL).observe(clock.perf_counter() - started)
        else:
            metrics.POLLS.labels(PROTOCOL, "failed").inc()
            kind = error.kind if error else "no_data"
            log.warning(
                "bus %s: meter %s (%s) not read: %s",
                self.name,
                meter.name,
                meter.address,
                error or kind,
            )
        return ReadOutcome(
            day=ts.astimezone(self.tz).date(),
            bus=self.name,
            device_id=meter.device_id,
            ok=ok,
            at=ts,
            error=None if ok else f"{error.kind if error else 'no_data'}: {error or 'no values'}",
        )

    def _readings(
        self, meter: MeterRef, ts: datetime, values: list[tuple[str, Decimal]], quality: Quality
    ) -> list[Reading]:
        state = self._state[meter.address]
        reg = registry()
        drift = state.clock_drift
        if drift is not None and abs(drift) > self.policy.clock_bound:
            quality |= Quality.CLOCK_SUSPECT
        out = []
        for quantity, value in values:
            q = quality
            if reg[quantity].kind is QuantityKind.REGISTER and not quantity.endswith("*d"):
                last = state.registers.get(quantity)
                if last is not None and value < last:
                    q |= Quality.OVERFLOW  # 999999.99 → 0: analytics adds the modulus
                state.registers[quantity] = value
            out.append(Reading(meter.device_id, quantity, ts, float(value), int(q)))
        return out

    async def _check_event_counters(self, meter: MeterRef) -> None:
        state = self._state[meter.address]
        events: list[Event] = []
        for counter_di, (kind, record_pattern) in EVENT_COUNTERS.items():
            [[(_, count)]] = await self._read(meter, counter_di)
            count = int(count)
            known = state.event_counts.get(kind)
            if known is None:
                known = await asyncio.to_thread(self._db, count_events, meter.device_id, kind)
            new = min(count - known, MAX_EVENT_RECORDS) if count > known else 0
            for n in range(1, new + 1):
                [[(_, start), (_, end)]] = await self._read(meter, nth(record_pattern, n))
                events.append(
                    Event(
                        meter.device_id,
                        self._utc(start),
                        kind,
                        {"end": self._utc(end).isoformat(), "counter": count - n + 1},
                    )
                )
            state.event_counts[kind] = count
        if events:
            await asyncio.to_thread(self._db, store_events, events)
            log.info(
                "meter %s: %d new event(s): %s",
                meter.name,
                len(events),
                ", ".join(e.kind for e in events),
            )

    # -- clocks ----------------------------------------------------------------------------

    async def check_clocks(self) -> dict[str, float]:
        """Read every meter's clock; broadcast-sync those within the bound; raise an event for
        those beyond it (they are not corrected: a field visit decides)."""
        drifts: dict[str, float] = {}
        events: list[Event] = []
        for meter in self.meters:
            try:
                drift = await self._clock_drift(meter)
            except DeviceError as exc:
                log.debug("%s: clock not read: %s", meter.name, exc)
                continue
            drifts[meter.address] = drift
            self._state[meter.address].clock_drift = drift
            if abs(drift) > self.policy.clock_bound:
                events.append(
                    Event(
                        meter.device_id,
                        datetime.fromtimestamp(self.now(), UTC).replace(microsecond=0),
                        "clock_drift",
                        {"drift_s": round(drift, 1), "bound_s": self.policy.clock_bound},
                    )
                )
                log.warning(
                    "meter %s clock is off by %+.0f s (bound %g s): not corrected",
                    meter.name,
                    drift,
                    self.policy.clock_bound,
                )
        if any(1.0 < abs(d) <= self.policy.clock_bound for d in drifts.values()):
            await self.bus.exchange(
                codec.broadcast_time_request(datetime.fromtimestamp(self.now(), self.tz)),
                expect_reply=False,
            )
            for address, d in drifts.items():
                if abs(d) <= self.policy.clock_bound:
                    self._state[address].clock_drift = 0.0
        if events:
            await asyncio.to_thread(self._db, store_events, events)
        return drifts

    async def _clock_drift(self, meter: MeterRef) -> float:
        [[(_, day)]] = await self._read(meter, 0x04000101)
        before = self.now()
        [[(_, tod)]] = await self._read(meter, 0x04000102)
        after = self.now()
        meter_time = datetime.combine(day, tod, self.tz).timestamp()
        # the meter read its clock about midway through the exchange; it truncates to whole
        # seconds, so on average it is half a second further on than it says
        return meter_time + 0.5 - (before + after) / 2

    # -- daily frozen data and load records ------------------------------------------------

    async def read_daily(self) -> None:
        """Every meter's daily reads at once (tests, commands); `run` spreads them out."""
        for meter in self.meters:
            await self.daily_reads(meter)

    async def daily_reads(self, meter: MeterRef) -> None:
        """Yesterday's frozen registers and load records (normal reads), then the re-read of
        whatever the last days still lack."""
        today = datetime.fromtimestamp(self.now(), self.tz).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        try:
            await self.read_frozen(meter, 1, Quality.GOOD)
            await self.read_curve(
                meter, grid(today - timedelta(days=1), today, CURVE_STEP), Quality.GOOD
            )
            await self.sink.flush()  # the gap search must see what was just read
            await self.reread(meter)
        except DeviceError as exc:
            log.warning("meter %s: daily read failed: %s", meter.name, exc)

    async def read_frozen(
        self, meter: MeterRef, days_back: int, quality: Quality
    ) -> datetime | None:
        """Read the daily freeze `days_back` (1 = the latest); store its registers at the
        freeze instant. Returns the freeze time (UTC)."""
        [[(_, frozen_at)]] = await self._read(meter, nth("050600NN", days_back))
        [values] = await self._read(meter, nth("050601NN", days_back))
        ts = self._utc(frozen_at)
        readings = [Reading(meter.device_id, q, ts, float(v), int(quality)) for q, v in values]
        await self.sink.add_many(readings)
        return ts

    async def read_curve(
        self, meter: MeterRef, points_local: list[datetime], quality: Quality
    ) -> int:
        """Read the load records at these local 15-minute instants, in runs of ≤ 9."""
        count = 0
        points_local = [p.replace(tzinfo=None) for p in points_local]  # the meter speaks local
        for run in _runs(points_local, CURVE_STEP, RECORDS_PER_READ):
            records = await self._read(meter, CURVE_DI, blocks=len(run), start=run[0])
            wanted = set(run)
            readings = []
            for record in records:
                (_, at), *values = record
                if at not in wanted:
                    continue
                ts = self._utc(at)
                readings.extend(
                    Reading(meter.device_id, q, ts, float(v), int(quality)) for q, v in values
                )
            await self.sink.add_many(readings)
            count += len(readings)
        return count

    async def reread(self, meter: MeterRef, *, days: int | None = None) -> dict[str, int]:
        """补抄: fill the frozen days and curve points of the last `days` days that the database
        lacks, from the meter's memory, flagged RE_READ. Returns what was asked and restored."""
        days = days or self.policy.reread_days
        now_local = datetime.fromtimestamp(self.now(), self.tz)
        today = now_local.replace(hour=0, minute=0, second=0, microsecond=0)
        midnights = [today - timedelta(days=n) for n in range(days)]
        # the newest complete interval: a record for t exists once t has passed
        last = now_local.replace(minute=now_local.minute // 15 * 15, second=0, microsecond=0)
        points = grid(today - timedelta(days=days - 1), last + CURVE_STEP, CURVE_STEP)

        def find(conn: psycopg.Connection) -> tuple[list[datetime], list[datetime]]:
            frozen = missing_instants(
                conn, meter.device_id, "1.8.0*d", [m.astimezone(UTC) for m in midnights]
            )
            curve = missing_instants(
                conn, meter.device_id, "1.8.0", [p.astimezone(UTC) for p in points]
            )
            return frozen, curve

        frozen_gaps, curve_gaps = await asyncio.to_thread(self._db, find)
        restored_frozen = 0
        for ts in frozen_gaps:
            days_back = (today.date() - ts.astimezone(self.tz).date()).days + 1
            try:
                await self.read_frozen(meter, days_back, Quality.RE_READ)
                restored_frozen += 1
            except DeviceRejected:
                log.info(
                    "meter %s has no frozen data for %s", meter.name, ts.astimezone(self.tz).date()
                )
        local_points = [ts.astimezone(self.tz).replace(tzinfo=None) for ts in curve_gaps]
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

    # -- commands --------------------------------------------------------------------------

    async def discover(self) -> list[str]:
        """Find the meters on the bus by abbreviated addressing: ask AA…AAxx for each last
        byte xx; where several meters answer at once (a garbled reply), narrow down by the
        next byte. Returns the addresses found."""
        found: list[str] = []

        async def search(known_low: str) -> None:  # low bytes fixed so far, e.g. "01" or "2901"
            for b in range(100):
                low = f"{b:02d}" + known_low
                pattern = "AA" * (6 - len(low) // 2) + low
                try:
                    reply = await self.bus.exchange(
                        codec.Frame(pattern, codec.Function.READ_ADDRESS)
                    )
                except FrameError:
                    if len(low) < 12:
                        await search(low)  # a collision: tell them apart by the next byte
                    continue
                except DeviceError:
                    continue
                if reply is not None and reply.address not in found:
                    found.append(reply.address)

        await search("")
        return found

    async def relay(
        self,
        meter: MeterRef,
        action: RelayAction,
        *,
        password: str,
        operator: str,
        valid_for: timedelta = timedelta(minutes=10),
    ) -> None:
        """Operate the meter's relay; DeviceRejected if the meter refuses (wrong password)."""
        until = datetime.fromtimestamp(self.now(), self.tz) + valid_for
        reply = await self.bus.exchange(
            codec.relay_control_request(
                meter.address,
                password=password,
                operator=operator,
                action=action,
                valid_until=until,
            )
        )
        assert reply is not None
        if reply.is_error:
            raise DeviceRejected(
                f"meter {meter.address} refused relay {action.name}: {reply.error!r}",
                code=int(reply.error or 0),
                retryable=False,
            )
        await asyncio.to_thread(
            self._db,
            store_events,
            [
                Event(
                    meter.device_id,
                    datetime.fromtimestamp(self.now(), UTC),
                    "relay_operated",
                    {"action": action.name, "operator": operator},
                )
            ],
        )

    # -- helpers ---------------------------------------------------------------------------

    async def _read(self, meter: MeterRef, di: int, **kwargs):
        attempts = self.policy.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self.bus.read(meter.address, di, **kwargs)
            except DeviceError as exc:
                metrics.POLL_ERRORS.labels(PROTOCOL, exc.kind).inc()
                if attempt == attempts or not exc.retryable:
                    raise
        raise AssertionError("unreachable")

    def _utc(self, local: datetime | date) -> datetime:
        if not isinstance(local, datetime):
            local = datetime.combine(local, dtime())
        return local.replace(tzinfo=self.tz).astimezone(UTC)

    def _db(self, fn, *args):
        with psycopg.connect(self.conninfo) as conn:
            return fn(conn, *args)


def _runs(points: list[datetime], step: timedelta, limit: int) -> list[list[datetime]]:
    """Split sorted instants into runs of consecutive grid points, at most `limit` long."""
    runs: list[list[datetime]] = []
    for p in sorted(points):
        if runs and p - runs[-1][-1] == step and len(runs[-1]) < limit:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs
