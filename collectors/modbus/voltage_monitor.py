"""Polls a voltage monitor (电压监测仪) over Modbus RTU: its last 60 one-minute voltages and
its own statistics of yesterday (the register layout is in simulators/voltage_monitor.py).

Polled at least hourly, every poll re-reads the last hour; the idempotent writer stores each
minute once. The monitor's daily statistics go to ``voltage_daily_stats`` as the device
computed them, so analytics can set its own qualification rate beside the monitor's.
Its loss-of-voltage (失压) records become ``voltage_loss`` events (``ts`` start, ``detail.end``)
once the voltage is back: events are stored once and never updated, so a loss still going on
is stored at the first poll after its end (the monitor keeps its last 10 records).
"""

from __future__ import annotations

import logging
import struct
from datetime import UTC, date, datetime

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from collectors import metrics
from collectors.base import ReadingSink
from collectors.exceptions import DeviceUnreachable
from collectors.modbus.requests import read_registers
from ingest.model import Event, Reading
from ingest.store import CollectorStore, VoltageDayStats

log = logging.getLogger(__name__)
CLASSES = {1: "A", 2: "B", 3: "C", 4: "D"}


class VoltageMonitorCollector:
    protocol = "modbus_rtu"

    def __init__(
        self,
        *,
        device_id: int,
        device_name: str,
        port: str,
        unit_id: int = 1,
        baud: int = 9600,
        parity: str = "N",
        store: CollectorStore,
        timeout: float = 1.0,
    ) -> None:
        metrics.declare(self.protocol)
        self.device_id = device_id
        self.device_name = device_name
        self.unit_id = unit_id
        self.port = port
        self.store = store
        self.client = AsyncModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baud, parity=parity, timeout=timeout, retries=0
        )

    async def _read(self, address: int, count: int) -> list[int]:
        return await read_registers(
            self.client.read_input_registers,
            address=address,
            count=count,
            unit=self.unit_id,
            where=f"voltage monitor {self.unit_id} on {self.port}",
        )

    async def gather(self, sink: ReadingSink) -> int:
        if not self.client.connected and not await self.client.connect():
            raise DeviceUnreachable(f"cannot open {self.port}")
        recent = await self._read(0, 63)
        stats = await self._read(100, 11)
        config = await self._read(200, 4)
        losses = await self._read(300, 41)
        newest = (recent[1] << 16) | recent[2]
        readings = [
            Reading(
                self.device_id,
                "32.7.0",
                datetime.fromtimestamp(newest - 60 * (59 - k), UTC),
                recent[3 + k] / 10,
            )
            for k in range(60)
        ]
        await sink.add_many(readings)
        day_stats = self._day_stats(stats, config)
        if day_stats is not None:  # None: a monitor without a complete day yet
            await self.store.store_voltage_stats(day_stats)
        events = self._losses(losses)
        if events:  # re-read records are no-ops (the events' primary key)
            await self.store.add_events(events)
        return len(readings)

    def _losses(self, r: list[int]) -> list[Event]:
        """The ended loss-of-voltage records (registers 301–340, 4 each: start, end)."""
        out = []
        for k in range(10):
            start = (r[1 + 4 * k] << 16) | r[2 + 4 * k]
            end = (r[3 + 4 * k] << 16) | r[4 + 4 * k]
            if start and end and end <= start:
                log.warning("%s: loss-of-voltage record ending before it starts", self.device_name)
            elif start and end:
                out.append(
                    Event(
                        self.device_id,
                        datetime.fromtimestamp(start, UTC),
                        "voltage_loss",
                        {"end": datetime.fromtimestamp(end, UTC).isoformat()},
                    )
                )
        return out

    def _day_stats(self, s: list[int], c: list[int]) -> VoltageDayStats | None:
        day_num = (s[0] << 16) | s[1]
        if day_num == 0:
            return None
        nominal = c[0] / 10
        upper_pct, lower_pct = (struct.unpack(">h", struct.pack(">H", w))[0] / 100 for w in c[2:4])
        return VoltageDayStats(
            device_id=self.device_id,
            day=date(day_num // 10000, day_num // 100 % 100, day_num % 100),
            monitoring_class=CLASSES.get(c[1], "?"),
            nominal_v=nominal,
            upper_v=round(nominal * (1 + upper_pct / 100), 2),
            lower_v=round(nominal * (1 + lower_pct / 100), 2),
            monitored_min=s[2],
            over_min=s[3],
            under_min=s[4],
            max_v=s[5] / 10,
            max_at=datetime.fromtimestamp((s[6] << 16) | s[7], UTC),
            min_v=s[8] / 10,
            min_at=datetime.fromtimestamp((s[9] << 16) | s[10], UTC),
        )

    async def close(self) -> None:
        self.client.close()
