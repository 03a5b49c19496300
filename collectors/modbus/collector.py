"""Polls one Modbus TCP device: reads the blocks its register map plans, decodes, hands over.

Each device keeps its own connection. pymodbus serialises requests on one connection, so
devices behind one gateway port each open their own and are polled concurrently; a gateway
that allows a single connection is configured by putting its devices on one RTU bus (later).
pymodbus' own retries are off: the scheduler owns timeouts and retries. `timeout` bounds
each request; the scheduler's poll timeout bounds the whole poll.

A block the device refuses (an exception reply) or answers unreadably is counted and logged,
and the poll stores what the other blocks read; only when no block could be read does the
poll fail. Timeouts and lost connections fail the poll: the device, not the block, is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter
from pymodbus.client import AsyncModbusTcpClient

from collectors import metrics
from collectors.base import ReadingSink
from collectors.exceptions import DeviceRejected, DeviceUnreachable, FrameError
from collectors.modbus.registermap import ReadBlock, RegisterMap
from collectors.modbus.requests import read_registers
from ingest.model import Reading

# pymodbus logs every timeout at ERROR with its own wording; gridread counts and logs them.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
log = logging.getLogger(__name__)

BLOCKS_REFUSED = Counter(
    "gridread_modbus_blocks_refused",
    "Register blocks a Modbus device refused or answered unreadably, by kind",
    ["kind"],
)


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
        now: Callable[[], float] = time.time,  # stamps the readings (a test's manual clock)
    ) -> None:
        metrics.declare(self.protocol)
        self.now = now
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
        self._refused: set[int] = set()  # addresses of blocks refused on the last poll

    async def gather(self, sink: ReadingSink) -> int:
        if not self.client.connected and not await self.client.connect():
            raise DeviceUnreachable(f"cannot connect to {self.endpoint}")
        values: list[tuple[str, float]] = []
        where = f"unit {self.unit_id} at {self.endpoint}"
        errors: list[DeviceRejected | FrameError] = []
        for block in self.blocks:
            try:
                registers = await read_registers(
                    self._read,
                    address=block.address,
                    count=block.count,
                    unit=self.unit_id,
                    where=where,
                )
                values.extend(self.register_map.decode(block, registers))
            except (DeviceRejected, FrameError) as exc:
                errors.append(exc)
                self._block_failed(block, exc)
                continue
            if block.address in self._refused:
                self._refused.discard(block.address)
                log.info("%s: block from %d is read again", self.device_name, block.address)
        if errors and not values:
            raise errors[0]
        ts = datetime.fromtimestamp(self.now(), UTC)
        readings = [Reading(self.device_id, q, ts, v) for q, v in values]
        await sink.add_many(readings)
        return len(readings)

    def _block_failed(self, block: ReadBlock, exc: DeviceRejected | FrameError) -> None:
        """Count every refusal; log the first of a run as a warning."""
        BLOCKS_REFUSED.labels(exc.kind).inc()
        first = block.address not in self._refused
        self._refused.add(block.address)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "%s: block of %d registers from %d refused (%s); the other blocks are stored: %s",
            self.device_name,
            block.count,
            block.address,
            exc.kind,
            exc,
        )

    async def close(self) -> None:
        self.client.close()
