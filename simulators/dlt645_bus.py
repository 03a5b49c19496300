"""A simulated RS-485 bus of DL/T 645-2007 meters behind one serial port (a pty pair).

gridread opens `bus.port` (the pty's slave side, e.g. /dev/pts/7) exactly as it would open
/dev/ttyUSB0. Each meter has its own address, registers from a `MeterModel` (ground truth),
a clock that can drift, 62 days of daily frozen data, 15-minute load records, power-down and
cover-open event records, and a relay. A pty ignores the baud rate, so the bus emulates wire
time itself: a reply is written only after the request and the reply would have taken on the
wire at the configured baud rate (11 bits per byte, 8E1) plus the meter's turnaround.

Fault switches per meter: no reply, corrupted checksum, garbage before the frame, clock drift,
register rollover (999999.99 → 0), error reply for a DI, items not available (FF, as Ub/Uc
of a single-phase meter), a reply delayed past the master's timeout. Like real meters, none
answers a frame sent to the broadcast address. The relay obeys control code 1C given the
meter's password, shows in status word 3 (04000503, bit 4) and, open, cuts current and power.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from collectors.dlt645 import codec
from collectors.dlt645.codec import ErrorBits, Frame, FrameBuffer, Function
from collectors.dlt645.dataids import lookup
from ingest.localtime import DEFAULT_TIMEZONE
from simulators.meter_model import MeterModel

log = logging.getLogger(__name__)

TARIFF_SHARES = (Decimal("0.10"), Decimal("0.30"), Decimal("0.35"), Decimal("0.25"))
REGISTER_MODULUS = Decimal("1000000")  # XXXXXX.XX rolls over after 999999.99
SIGNED_MODULUS = Decimal("800000")  # -XXXXXX.XX: the top bit is the sign
CURVE_STEP = timedelta(minutes=15)
CURVE_DAYS = 10  # how far back a meter keeps load records
FROZEN_DAYS = 62
MAX_RECORDS_PER_FRAME = 9  # 4 + 9 × 21 bytes ≤ 200
OPEN_RELAY_ZERO = ("31.7.0", "51.7.0", "71.7.0", "1.7.0")  # what an open relay cuts


class Fault(StrEnum):
    NONE = "none"
    NO_REPLY = "no_reply"
    BAD_CHECKSUM = "bad_checksum"
    GARBAGE = "garbage"  # noise before the reply frame (still readable)
    ERROR_REPLY = "error_reply"  # answers every read with ERR = no data


def byte_time(baud: int) -> float:
    return 11 / baud  # start + 8 data + even parity + stop


@dataclass
class SimMeter:
    address: str
    model: MeterModel
    clock_offset: float = 0.0  # seconds the meter's clock is ahead of true time
    register_offset: Decimal = Decimal(0)  # added to every energy register (rollover tests)
    power_downs: list[tuple[datetime, datetime]] = field(default_factory=list)  # local times
    cover_opens: list[tuple[datetime, datetime]] = field(default_factory=list)
    relay_closed: bool = True
    password: str = "02123456"
    unsupported: set[int] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)  # quantities served as FF (not available)
    unavailable: set[int] = field(default_factory=set)  # DIs answered with all FF
    overrides: dict[str, Decimal] = field(default_factory=dict)  # registers set by a test
    reply_delay: float = 0.0  # seconds added to every reply (a slow meter)
    fault: Fault = Fault.NONE
    reads: list[int] = field(default_factory=list)  # the DIs asked, in order (tests)
    relay_commands: list[int] = field(default_factory=list)  # RelayAction bytes obeyed

    def status_word_3(self) -> int:
        """Status word 3 (04000503): bit 4 the relay's state, bit 6 the last command."""
        word = 0 if self.relay_closed else codec.Status3.RELAY_OPEN
        last = self.relay_commands[-1] if self.relay_commands else None
        if last == codec.RelayAction.DISCONNECT:
            word |= codec.Status3.RELAY_COMMANDED_OPEN
        return int(word)

    def local_now(self, now: float, tz: ZoneInfo) -> datetime:
        return datetime.fromtimestamp(now + self.clock_offset, tz).replace(tzinfo=None)

    def energy(self, t: float) -> Decimal:
        """Forward active energy register at true time t: the model, rounded as the meter
        keeps it, offset and wrapped at 999999.99."""
        value = Decimal(str(round(self.model.energy_kwh(t), 2))) + self.register_offset
        return value % REGISTER_MODULUS

    def _export(self, t: float) -> float:
        """The export register: a model that has one over time (the world's) says it at t."""
        at = getattr(self.model, "export_at", None)
        return at(t) if at is not None else self.model.export_kwh

    def registers(self, t: float) -> dict[str, Decimal]:
        total = self.energy(t)
        tariffs = [(total * s).quantize(Decimal("0.01")) for s in TARIFF_SHARES[:-1]]
        tariffs.append(total - sum(tariffs))
        pf = self.model.power_factor
        reactive_ratio = Decimal(str(round((1 - pf * pf) ** 0.5 / pf, 4)))
        return {
            "1.8.0": total,
            **{f"1.8.{i + 1}": v for i, v in enumerate(tariffs)},
            "2.8.0": Decimal(str(round(self._export(t), 2))),
            "3.8.0": (total * reactive_ratio).quantize(Decimal("0.01")) % SIGNED_MODULUS,
            "4.8.0": Decimal("0.00"),
            **self.overrides,
        }


class DLT645BusSimulator:
    """Serves a list of meters on one pty; `port` is the device path to open."""

    def __init__(
        self,
        meters: list[SimMeter],
        *,
        baud: int = 2400,
        clock: Callable[[], float] = time.time,
        timezone: str = DEFAULT_TIMEZONE,
        turnaround: float = 0.0,
        seed: int = 645,
    ) -> None:
        self.meters = {m.address: m for m in meters}
        self.baud = baud
        self.clock = clock
        self.tz = ZoneInfo(timezone)
        self.turnaround = turnaround
        self.rng = random.Random(seed)
        self.requests = 0
        self.replies = 0
        self._master: int | None = None
        self._slave: int | None = None
        self.port = ""
        self._buffer = FrameBuffer()
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        asyncio.get_running_loop().add_reader(self._master, self._on_readable)
        self._task = asyncio.create_task(self._serve(), name=f"dlt645-bus {self.port}")
        log.info(
            "DL/T 645 bus simulator: %d meters on %s at %d baud",
            len(self.meters),
            self.port,
            self.baud,
        )

    async def stop(self) -> None:
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)  # type: ignore[arg-type]
        except (BlockingIOError, OSError):
            return
        self._buffer.feed(data)
        for item in self._buffer.frames():
            if isinstance(item, Frame) and not item.is_reply:
                self._queue.put_nowait(item)

    # -- the bus -------------------------------------------------------------------------

    async def _serve(self) -> None:
        bt = byte_time(self.baud)
        while True:
            request = await self._queue.get()
            self.requests += 1
            replies = self._answers(request)
            wire_in = len(request.to_bytes()) * bt
            if not replies:
                continue
            delay = max(delay for delay, _ in replies)
            frames = [raw for _, raw in replies]
            out = frames[0] if len(frames) == 1 else _collide(frames)
            await asyncio.sleep(wire_in + self.turnaround + delay + len(out) * bt)
            os.write(self._master, out)  # type: ignore[arg-type]
            self.replies += 1

    def _answers(self, request: Frame) -> list[tuple[float, bytes]]:
        now = self.clock()
        if request.function == Function.BROADCAST_TIME:
            self._broadcast_time(request, now)
            return []
        if request.address == codec.BROADCAST:
            return []  # meters never answer a broadcast (nor act on a read sent to it)
        out = []
        for meter in self.meters.values():
            if not _matches(request.address, meter.address):
                continue
            if meter.fault is Fault.NO_REPLY:
                continue
            frame = self._answer(meter, request, now)
            if frame is None:
                continue
            raw = frame.to_bytes()
            if meter.fault is Fault.BAD_CHECKSUM:
                raw = raw[:-2] + bytes([(raw[-2] + 1) & 0xFF]) + raw[-1:]
            elif meter.fault is Fault.GARBAGE:
                raw = (
                    bytes(self.rng.randrange(256) for _ in range(7)).replace(b"\x68", b"\x69") + raw
                )
            out.append((meter.reply_delay, raw))
        return out

    def _answer(self, meter: SimMeter, request: Frame, now: float) -> Frame | None:
        f = request.function
        if f == Function.READ_ADDRESS:
            return codec.reply(request, bytes.fromhex(meter.address)[::-1], address=meter.address)
        if f == Function.READ:
            return self._read(meter, request, now)
        if f == Function.RELAY_CONTROL:
            if codec.parse_password(request.data[:4]) != meter.password.upper():
                return codec.error_reply(request, ErrorBits.UNAUTHORISED, address=meter.address)
            action = request.data[8]
            if action == codec.RelayAction.DISCONNECT:
                meter.relay_closed = False
            elif action == codec.RelayAction.CONNECT_ALLOWED:
                meter.relay_closed = True  # a real meter may wait for the customer's button
            meter.relay_commands.append(action)
            return codec.reply(request, address=meter.address)
        if f == Function.FREEZE:
            return codec.reply(request, address=meter.address)
        return codec.error_reply(request, ErrorBits.OTHER, address=meter.address)

    def _broadcast_time(self, request: Frame, now: float) -> None:
        """A meter takes a broadcast time only within ±5 minutes of its own clock."""
        digits = request.data[::-1].hex()  # YYMMDDhhmmss
        try:
            sent = datetime.strptime(digits, "%y%m%d%H%M%S").replace(tzinfo=self.tz).timestamp()
        except ValueError:
            return
        for meter in self.meters.values():
            if abs((now + meter.clock_offset) - sent) <= 300:
                meter.clock_offset = sent - now

    def _read(self, meter: SimMeter, request: Frame, now: float) -> Frame:
        di = int.from_bytes(request.data[:4], "little")
        meter.reads.append(di)
        if meter.fault is Fault.ERROR_REPLY or di in meter.unsupported:
            return codec.error_reply(request, ErrorBits.NO_DATA, address=meter.address)
        if di == codec.STATUS_WORD_3:
            word = meter.status_word_3().to_bytes(2, "little")
            return codec.reply(request, request.data[:4] + word, address=meter.address)
        try:
            entry = lookup(di)
        except KeyError:
            return codec.error_reply(request, ErrorBits.NO_DATA, address=meter.address)
        local = meter.local_now(now, self.tz)
        if entry.record:
            blocks = request.data[4] if len(request.data) > 4 else 1
            start = (
                datetime.strptime(request.data[5:10][::-1].hex(), "%y%m%d%H%M")
                if len(request.data) >= 10
                else local - CURVE_STEP
            )
            records = self._curve(meter, start, min(blocks, MAX_RECORDS_PER_FRAME), local)
            return codec.reply(request, request.data[:4] + records, address=meter.address)
        values = self._values(meter, di, local, now)
        if di in meter.unavailable:
            values = [None] * len(entry.fields)
        if values is None:
            return codec.error_reply(request, ErrorBits.NO_DATA, address=meter.address)
        return codec.reply(request, request.data[:4] + entry.encode(values), address=meter.address)

    def _values(self, meter: SimMeter, di: int, local: datetime, now: float) -> list | None:
        instant = _instants(meter, now)
        regs = meter.registers(now)
        group, item, n = di >> 16, (di >> 8) & 0xFF, di & 0xFF
        if di == 0x04000101:
            return [local.date()]
        if di == 0x04000102:
            return [local.time().replace(microsecond=0)]
        if group == 0x0506:  # daily freeze n days back
            midnight = self._midnight(local, n)
            if midnight is None:
                return None
            if item == 0x00:
                return [midnight]
            frozen = meter.registers(self._true_time(meter, midnight))
            if item == 0x01:
                return [frozen[f"1.8.{i}"] for i in range(5)]
            return [Decimal(0)] * 5
        if group in (0x0311, 0x0330):
            events = meter.power_downs if group == 0x0311 else meter.cover_opens
            if n == 0:
                return [Decimal(len(events))]
            if n > len(events):
                return None
            return list(events[-n])
        entry = lookup(di)
        out = []
        for _fmt, quantity in entry.fields:
            if quantity in meter.missing:
                out.append(None)  # FF: the meter does not have it
            elif quantity in regs:
                out.append(regs[quantity])
            elif quantity == "15.8.0":
                out.append((regs["1.8.0"] + regs["2.8.0"]) % SIGNED_MODULUS)
            elif quantity.startswith("2.8."):  # no export behind these meters
                out.append(Decimal(0))
            elif quantity in instant:
                out.append(instant[quantity])
            elif quantity == "3.7.0":
                out.append(Decimal(0))
            elif quantity == "9.7.0":
                out.append(instant["1.7.0"])
            else:
                return None
        return out

    def _midnight(self, local: datetime, n: int) -> datetime | None:
        if not 1 <= n <= FROZEN_DAYS:
            return None
        today = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=n - 1)

    def _true_time(self, meter: SimMeter, local: datetime) -> float:
        return local.replace(tzinfo=self.tz).timestamp() - meter.clock_offset

    def _curve(self, meter: SimMeter, start: datetime, blocks: int, local_now: datetime) -> bytes:
        entry = lookup(0x06040001)
        minutes = (start.minute // 15) * 15
        t = start.replace(minute=minutes, second=0, microsecond=0)
        if t < start:
            t += CURVE_STEP
        oldest = local_now - timedelta(days=CURVE_DAYS)
        out = b""
        while blocks and t <= local_now:
            if t >= oldest:
                regs = meter.registers(self._true_time(meter, t))
                out += entry.encode([t, regs["1.8.0"], regs["2.8.0"], regs["3.8.0"], regs["4.8.0"]])
                blocks -= 1
            t += CURVE_STEP
        return out

    # -- test and demo helpers -----------------------------------------------------------

    def truth(self, address: str, t: float | None = None) -> dict[str, Decimal]:
        """What the meter's registers hold at true time t (default: now)."""
        meter = self.meters[address]
        t = self.clock() if t is None else t
        return {**_instants(meter, t), **meter.registers(t)}  # registers as the meter keeps them

    def power_down(self, address: str, start: datetime, end: datetime) -> None:
        self.meters[address].power_downs.append((start, end))


def _instants(meter: SimMeter, t: float) -> dict[str, Decimal]:
    instant = {k: Decimal(str(round(v, 4))) for k, v in meter.model.values(t).items()}
    if not meter.relay_closed:  # the relay cut the supply: no current, no power
        instant.update({q: Decimal(0) for q in OPEN_RELAY_ZERO if q in instant})
    return instant


def _matches(pattern: str, address: str) -> bool:
    """Per byte: AA in the request matches any byte (abbreviated addressing)."""
    return all(p == "AA" or p == a for p, a in zip(_pairs(pattern), _pairs(address), strict=True))


def _pairs(address: str) -> list[str]:
    return [address[i : i + 2].upper() for i in range(0, 12, 2)]


def _collide(frames: list[bytes]) -> bytes:
    """Two meters answering at once: on RS-485 the line carries a mix of both."""
    size = max(len(f) for f in frames)
    out = bytearray(size)
    for f in frames:
        for i, b in enumerate(f):
            out[i] |= b
    return bytes(out)


def make_meters(
    count: int, *, seed: int = 645, first_address: int = 202107070001
) -> list[SimMeter]:
    rng = random.Random(seed)
    meters = []
    for i in range(count):
        meters.append(SimMeter(f"{first_address + i:012d}", MeterModel.random(rng)))
    return meters


__all__ = ["DLT645BusSimulator", "Fault", "SimMeter", "byte_time", "make_meters"]
