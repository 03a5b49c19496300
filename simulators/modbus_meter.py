"""Simulated Modbus TCP energy meters: several units behind one port, on a real TCP socket.

Values come from `MeterModel` at the simulator's clock (wall time by default; tests pass a
clock they move by hand) and are encoded with the same register map the collector decodes.
Like a real meter it answers only the map's function (03 holding or 04 input registers;
the other gets exception 1) and, given `max_registers`, refuses longer requests with
exception 3. Fault switches per unit: no reply, a Modbus exception, a slow reply.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.modbus.registermap import RegisterMap
from simulators.meter_model import MeterModel

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
log = logging.getLogger(__name__)


class Fault(StrEnum):
    NONE = "none"
    NO_REPLY = "no_reply"  # the request is swallowed; the client times out
    EXCEPTION = "exception"  # answers exception 04, server device failure
    SLOW = "slow"  # answers, after `slow_delay` seconds


class ManualClock:
    """A clock that moves only when told: `clock.advance(60)`."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ModbusMeterSimulator:
    def __init__(
        self,
        register_map: RegisterMap,
        meters: dict[int, MeterModel],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        slow_delay: float = 2.0,
        max_registers: int = 125,
    ) -> None:
        self.register_map = register_map
        self.meters = meters
        self.host = host
        self.port = port
        self.clock = clock
        self.slow_delay = slow_delay
        self.max_registers = max_registers  # a longer request gets exception 3
        self.faults: dict[int, Fault] = {}
        self.requests = 0
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task | None = None

    def set_fault(self, unit: int, fault: Fault | str) -> None:
        self.faults[unit] = Fault(fault)

    def truth(self, unit: int) -> dict[str, float]:
        """What unit `unit` measures now (before the register map's rounding)."""
        return self.meters[unit].values(self.clock())

    async def start(self) -> None:
        size = max(f.address + f.width for f in self.register_map.fields)
        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
                action=functools.partial(self._serve, unit),
            )
            for unit in self.meters
        ]
        self._server = ModbusTcpServer(
            devices, address=(self.host, self.port), ignore_missing_devices=True
        )
        self._task = asyncio.create_task(self._server.serve_forever(), name="modbus-sim")
        for _ in range(200):  # serve_forever binds in the background
            transport = getattr(self._server, "transport", None)
            if transport is not None and getattr(transport, "sockets", None):
                self.port = transport.sockets[0].getsockname()[1]
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(
                f"modbus simulator did not start listening on {self.host}:{self.port}"
            )
        log.info(
            "modbus meter simulator: units %s on %s:%d", sorted(self.meters), self.host, self.port
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _serve(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        fault = self.faults.get(unit, Fault.NONE)
        if fault is Fault.NO_REPLY:
            raise NoSuchIdException(f"unit {unit} is switched to no reply")
        if fault is Fault.EXCEPTION:
            return ExcCodes.DEVICE_FAILURE
        if fault is Fault.SLOW:
            await asyncio.sleep(self.slow_delay)
        if function_code in (3, 4) and function_code != self.register_map.function:
            return ExcCodes.ILLEGAL_FUNCTION
        if count > self.max_registers:
            return ExcCodes.ILLEGAL_VALUE
        if set_values is None:
            words = self.register_map.encode(self.truth(unit))
            for reg, word in words.items():
                registers[reg - start_address] = word
        return None
