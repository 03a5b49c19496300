"""A simulated voltage monitor (电压监测仪): a Modbus RTU device on a serial line.

It samples its voltage once a minute, keeps the last 60 one-minute values and its own daily
statistics (minutes above the upper limit, below the lower limit, maximum and minimum with
their times), as the monitoring classes A/B/C/D of the national standard describe. The
voltage follows a closed-form curve with known excursions above and below the limits, so
tests know the truth.

Input registers (function 04), 0-based:

    0       voltage now, 0.1 V                 uint16
    1–2     time of the newest 1-min value     uint32, Unix seconds (a whole minute)
    3–62    the last 60 one-minute values      uint16 each, 0.1 V, oldest first
    100–101 statistics day, YYYYMMDD          uint32 (yesterday, local time)
    102     monitored minutes                  uint16
    103     minutes above the upper limit      uint16
    104     minutes below the lower limit      uint16
    105     maximum, 0.1 V                      uint16
    106–107 time of the maximum                 uint32, Unix seconds
    108     minimum, 0.1 V                      uint16
    109–110 time of the minimum                 uint32, Unix seconds
    200     nominal voltage, 0.1 V              uint16
    201     monitoring class (1=A … 4=D)        uint16
    202     upper limit, 0.01 % of nominal      int16   (+700 = +7 %)
    203     lower limit, 0.01 % of nominal      int16   (-1000 = -10 %)
    300     loss-of-voltage records so far     uint16 (a counter; wraps at 65536)
    301–340 the last 10 loss-of-voltage (失压)  4 registers each, newest first: start uint32,
            records                            end uint32 (Unix seconds; end 0: not back yet;
                                               both 0: no record)

Losses are given to the simulator (`losses`: (start, end or None) Unix seconds); the
one-minute curve is not changed by them (the records are what is read for reliability).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from ingest.localtime import DEFAULT_TIMEZONE

CLASSES = {"A": 1, "B": 2, "C": 3, "D": 4}
LOSS_BASE, LOSS_RECORDS = 300, 10
REGISTERS = LOSS_BASE + 1 + 4 * LOSS_RECORDS


@dataclass
class VoltageModel:
    nominal: float = 220.0
    upper_pct: float = 7.0
    lower_pct: float = -10.0
    monitoring_class: str = "D"  # D: low-voltage customer end (the commonest)
    seed: float = 0.0

    def voltage(self, t: float) -> float:
        """A daily swing around nominal plus two short excursions a day: one high (≈ 238 V
        around 03:00 UTC) and one low (≈ 196 V around 11:00 UTC), each about 20 minutes."""
        day = 86400.0
        phase = (t % day) / day
        v = (
            self.nominal
            + 6.0 * math.sin(2 * math.pi * phase + self.seed)
            + 1.5 * math.sin(t / 97.0)
        )
        v += 17.0 * math.exp(-((((t % day) - 3 * 3600) / 600.0) ** 2))
        v -= 25.0 * math.exp(-((((t % day) - 11 * 3600) / 600.0) ** 2))
        return round(v, 1)

    @property
    def upper(self) -> float:
        return self.nominal * (1 + self.upper_pct / 100)

    @property
    def lower(self) -> float:
        return self.nominal * (1 + self.lower_pct / 100)

    def daily_stats(self, day_start: float) -> dict:
        """The monitor's own statistics of the 1440 one-minute values of a day."""
        values = [(day_start + 60 * k, self.voltage(day_start + 60 * k)) for k in range(1440)]
        vmax = max(values, key=lambda x: x[1])
        vmin = min(values, key=lambda x: x[1])
        return {
            "monitored": 1440,
            "over": sum(1 for _, v in values if v > self.upper),
            "under": sum(1 for _, v in values if v < self.lower),
            "max": vmax[1],
            "max_at": vmax[0],
            "min": vmin[1],
            "min_at": vmin[0],
        }


class VoltageMonitorSimulator:
    def __init__(
        self,
        port: str,
        model: VoltageModel,
        *,
        unit: int = 1,
        baud: int = 9600,
        clock: Callable[[], float] = time.time,
        timezone: str = DEFAULT_TIMEZONE,
    ) -> None:
        self.port, self.model, self.unit, self.baud = port, model, unit, baud
        self.clock = clock
        self.tz = ZoneInfo(timezone)
        self.losses: list[tuple[float, float | None]] = []  # (start, end): oldest first
        self._server: ModbusSerialServer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        device = SimDevice(
            id=self.unit,
            simdata=[SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)],
            action=functools.partial(self._serve),
        )
        self._server = ModbusSerialServer(
            [device], port=self.port, framer=FramerType.RTU, baudrate=self.baud, parity="N"
        )
        self._task = asyncio.create_task(self._server.serve_forever())
        await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def yesterday_start(self) -> float:
        local = datetime.fromtimestamp(self.clock(), self.tz)
        today = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return (today - timedelta(days=1)).timestamp()

    def registers(self) -> list[int]:
        now = self.clock()
        newest = int(now // 60 * 60)
        regs = [0] * REGISTERS
        regs[0] = round(self.model.voltage(now) * 10)
        regs[1], regs[2] = newest >> 16, newest & 0xFFFF
        for k in range(60):
            regs[3 + k] = round(self.model.voltage(newest - 60 * (59 - k)) * 10)
        start = self.yesterday_start()
        stats = self.model.daily_stats(start)
        day = int(datetime.fromtimestamp(start, self.tz).strftime("%Y%m%d"))
        regs[100], regs[101] = day >> 16, day & 0xFFFF
        regs[102], regs[103], regs[104] = stats["monitored"], stats["over"], stats["under"]
        regs[105] = round(stats["max"] * 10)
        regs[106], regs[107] = int(stats["max_at"]) >> 16, int(stats["max_at"]) & 0xFFFF
        regs[108] = round(stats["min"] * 10)
        regs[109], regs[110] = int(stats["min_at"]) >> 16, int(stats["min_at"]) & 0xFFFF
        regs[200] = round(self.model.nominal * 10)
        regs[201] = CLASSES[self.model.monitoring_class]
        regs[202] = round(self.model.upper_pct * 100) & 0xFFFF
        regs[203] = round(self.model.lower_pct * 100) & 0xFFFF
        begun = [(s, e) for s, e in self.losses if s <= now]
        regs[LOSS_BASE] = len(begun) & 0xFFFF
        for k, (start, end) in enumerate(reversed(begun[-LOSS_RECORDS:])):
            back = 0 if end is None or end > now else int(end)
            at = LOSS_BASE + 1 + 4 * k
            regs[at : at + 4] = [int(start) >> 16, int(start) & 0xFFFF, back >> 16, back & 0xFFFF]
        return regs

    async def _serve(self, function_code, start_address, address, count, registers, set_values):
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        registers[:REGISTERS] = self.registers()
        return None
