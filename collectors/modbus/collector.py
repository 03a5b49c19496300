"""Polls one Modbus TCP device: reads the blocks its register map plans, decodes, hands over.

Each device keeps its own connection. pymodbus serialises requests on one connection, so
devices behind one gateway port each open their own and are polled concurrently; a gateway
that allows a single connection is configured by putting its devices on one RTU bus (later).
pymodbus' own retries are off: the scheduler owns timeouts and retries.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pymodbus.client import AsyncModbusTcpClient

from collectors import metrics
from collectors.base import ReadingSink
from collectors.exceptions import DeviceUnreachable
from collectors.modbus.registermap import RegisterMap
from collectors.modbus.requests import read_registers
from ingest.model import Reading

# pymodbus logs every timeout at ERROR with its own wording; gridread counts and logs them.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusTcpCollector:
    protocol = "modbus_tcp"

    def __init__(
        self,
        *,
        device_id: int,
        device_name: str,
        host: str,
        port: int,
        unit_id: int,
        register_map: RegisterMap,
        timeout: float = 1.0,
    ) -> None:
        metrics.declare(self.protocol)
        self.device_id = device_id
        self.device_name = device_name
        self.unit_id = unit_id
        self.register_map = register_map
        self.blocks = register_map.plan()
        self.endpoint = f"{host}:{port}"
        self.client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout, retries=0, reconnect_delay=0, name=device_name
        )
        read = (
            self.client.read_holding_registers
            if register_map.function == 3
            else self.client.read_input_registers
        )
        self._read = read

    async def gather(self, sink: ReadingSink) -> int:
        if not self.client.connected and not await self.client.connect():
            raise DeviceUnreachable(f"cannot connect to {self.endpoint}")
        values: list[tuple[str, float]] = []
        where = f"unit {self.unit_id} at {self.endpoint}"
        for block in self.blocks:
            registers = await read_registers(
                self._read, address=block.address, count=block.count, unit=self.unit_id, where=where
            )
            values.extend(self.register_map.decode(block, registers))
        ts = datetime.now(UTC)
        readings = [Reading(self.device_id, q, ts, v) for q, v in values]
        await sink.add_many(readings)
        return len(readings)

    async def close(self) -> None:
        self.client.close()
