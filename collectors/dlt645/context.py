"""What every job of a bus collector shares: the meters, the bus, the sink and the store, the
policy, each meter's state, and the one way to read a DI (with the policy's retries)."""

from __future__ import annotations

import time as clock
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from zoneinfo import ZoneInfo

from collectors import metrics
from collectors.base import ReadingSink
from collectors.dlt645.dataids import Value, group, table
from collectors.dlt645.session import Dlt645Bus
from collectors.exceptions import DeviceError
from ingest.model import Quality, Reading
from ingest.quantities import QuantityKind, registry
from ingest.retry import Backoff
from ingest.store import CollectorStore

PROTOCOL = "dlt645"

# what "instant" means is data: the DIs tagged so in dataids.toml, in file order
DEFAULT_INSTANT_DIS = tuple(e.di for e in group("instant"))
# quantities the table carries with a sign (combined energies): they may go down
SIGNED = frozenset(q for e in table().values() for f, q in e.fields if q and f.signed)


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
    curve_step: timedelta = timedelta(minutes=15)
    records_per_read: int = 9  # load records per request: 4 + 9 × 21 bytes ≤ 200
    max_event_records: int = 10  # new event records fetched per counter and round
    # a meter counts as read (抄表成功) only when these arrived in the round
    required: tuple[str, ...] = ("1.8.0", "32.7.0", "31.7.0")
    # a lost port (adapter unplugged) is reopened after these delays, not an interval later
    reopen: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=60.0))


@dataclass
class MeterState:
    registers: dict[str, Decimal] = field(default_factory=dict)  # last values, for rollover
    event_counts: dict[str, int] = field(default_factory=dict)
    clock_drift: float | None = None  # seconds, meter minus head end
    singles: set[int] = field(default_factory=set)  # block DIs it refused: read item by item


class BusContext:
    def __init__(
        self,
        *,
        name: str,
        bus: Dlt645Bus,
        meters: Sequence[MeterRef],
        sink: ReadingSink,
        store: CollectorStore,
        timezone: str,
        policy: BusPolicy,
        now: Callable[[], float] = clock.time,
    ) -> None:
        self.name = name
        self.bus = bus
        self.meters = list(meters)
        self.sink = sink
        self.store = store
        self.tz = ZoneInfo(timezone)
        self.policy = policy
        self.now = now
        self.state = {m.address: MeterState() for m in self.meters}

    async def read(self, meter: MeterRef, di: int, **kwargs) -> list[list[tuple[str, Value]]]:
        attempts = self.policy.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self.bus.read(meter.address, di, **kwargs)
            except DeviceError as exc:
                metrics.POLL_ERRORS.labels(PROTOCOL, exc.kind).inc()
                if attempt == attempts or not exc.retryable:
                    raise
        raise AssertionError("unreachable")

    def now_utc(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def now_local(self) -> datetime:
        return datetime.fromtimestamp(self.now(), self.tz)

    def utc(self, local: datetime | date) -> datetime:
        """A meter's local time (naive) as UTC."""
        if not isinstance(local, datetime):
            local = datetime.combine(local, dtime())
        return local.replace(tzinfo=self.tz).astimezone(UTC)

    def clock_off(self, meter: MeterRef) -> bool:
        drift = self.state[meter.address].clock_drift
        return drift is not None and abs(drift) > self.policy.clock_bound

    def readings(
        self, meter: MeterRef, ts: datetime, values: list[tuple[str, Decimal]], quality: Quality
    ) -> list[Reading]:
        """Instant readings: CLOCK_SUSPECT while the meter's clock is off, OVERFLOW where a
        register went down since the last read."""
        state = self.state[meter.address]
        reg = registry()
        if self.clock_off(meter):
            quality |= Quality.CLOCK_SUSPECT
        out = []
        for quantity, value in values:
            q = quality
            if (
                reg[quantity].kind is QuantityKind.REGISTER
                and not quantity.endswith("*d")
                and quantity not in SIGNED  # a combined register may go down: no rollover
            ):
                last = state.registers.get(quantity)
                if last is not None and value < last:
                    q |= Quality.OVERFLOW  # 999999.99 → 0: analytics adds the modulus
                state.registers[quantity] = value
            out.append(Reading(meter.device_id, quantity, ts, float(value), int(q)))
        return out
