"""Simulated Modbus TCP energy meters: several units behind one port, on a real TCP socket.

Values come from `MeterModel` at the simulator's clock (wall time by default; tests pass a
clock they move by hand) and are encoded with the same register map the collector decodes.
Like a real meter it answers only the map's function (03 holding or 04 input registers;
the other gets exception 1) and, given `max_registers`, refuses longer requests with
exception 3. Fault switches per unit: no reply, a Modbus exception, a slow reply. A map with a
`[relay]` table gives each unit a load switch: its coil opens it (current and power drop to 0,
the energy register stops), a discrete input shows it, a holding register keeps a demand limit.
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

RELAY_FUNCTIONS = (1, 2, 5, 15)  # read coils, read discrete inputs, write coil(s)
OPEN_RELAY_ZERO = ("31.7.0", "51.7.0", "71.7.0", "1.7.0")  # what an open relay cuts


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
        # the load switch ([relay] of the map): closed = supply on; open cuts current and
        # power and stops the energy register
        self.relay_closed: dict[int, bool] = dict.fromkeys(meters, True)
        self.demand_limit: dict[int, list[int]] = {}  # words written to the limit register
        self._opened_at: dict[int, float] = {}
        self._energy_lost: dict[int, float] = dict.fromkeys(meters, 0.0)  # kWh while open
        self.requests = 0
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task | None = None

    def set_fault(self, unit: int, fault: Fault | str) -> None:
        self.faults[unit] = Fault(fault)

    def truth(self, unit: int) -> dict[str, float]:
        """What unit `unit` measures now (before the register map's rounding)."""
        now = self.clock()
        model = self.meters[unit]
        values = model.values(now)
        opened = self._opened_at.get(unit)
        if opened is not None:
            values.update(dict.fromkeys(OPEN_RELAY_ZERO, 0.0))
            values["1.8.0"] = model.energy_kwh(opened) - self._energy_lost[unit]
        else:
            values["1.8.0"] -= self._energy_lost[unit]
        return values

    def set_relay(self, unit: int, closed: bool) -> None:
        """Operate unit's relay (what its coil does; tests may call it directly)."""
        now = self.clock()
        model = self.meters[unit]
        opened = self._opened_at.get(unit)
        if closed and opened is not None:
            self._energy_lost[unit] += model.energy_kwh(now) - model.energy_kwh(opened)
            del self._opened_at[unit]
        elif not closed and opened is None:
            self._opened_at[unit] = now
        self.relay_closed[unit] = closed

    async def start(self) -> None:
        relay = self.register_map.relay
        size = max(f.address + f.width for f in self.register_map.fields)
        bits = 1
        if relay is not None:
            bits = max(relay.coil, relay.read_address) // 16 + 1
            if relay.demand_limit is not None:
                size = max(size, relay.demand_limit.address + 2)

        def blocks():  # coils, discrete inputs, holding, input registers: apart, as on meters
            return (
                [SimData(0, count=bits, values=0, datatype=DataType.BITS)],
                [SimData(0, count=bits, values=0, datatype=DataType.BITS)],
                [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
            )

        devices = [
            SimDevice(id=unit, simdata=blocks(), action=functools.partial(self._serve, unit))
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
        if function_code in RELAY_FUNCTIONS or self._is_limit(function_code, address):
            return self._relay(unit, function_code, address, start_address, registers, set_values)
        if function_code in (3, 4) and function_code != self.register_map.function:
            return ExcCodes.ILLEGAL_FUNCTION
        if count > self.max_registers:
            return ExcCodes.ILLEGAL_VALUE
        if set_values is None:
            words = self.register_map.encode(self.truth(unit))
            for reg, word in words.items():
                registers[reg - start_address] = word
        return None

    def _is_limit(self, function_code: int, address: int) -> bool:
        relay = self.register_map.relay
        limit = relay.demand_limit if relay is not None else None
        return limit is not None and function_code in (3, 6, 16) and address == limit.address

    def _relay(
        self,
        unit: int,
        function_code: int,
        address: int,
        start_address: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Coil (01/05), discrete input (02) and demand limit (03/06/16) of the relay."""
        relay = self.register_map.relay
        if relay is None:
            return ExcCodes.ILLEGAL_ADDRESS  # a meter without a switch
        if function_code in (3, 6, 16):
            if set_values is not None:
                self.demand_limit[unit] = [int(v) for v in set_values]
            else:
                words = self.demand_limit.get(unit, [])
                registers[address - start_address : address - start_address + len(words)] = words
            return None
        wanted = relay.coil if function_code in (1, 5, 15) else relay.read_address
        if function_code == 2 and relay.state != "discrete":
            return ExcCodes.ILLEGAL_ADDRESS
        if address != wanted:
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is not None:  # 05 / 15: the coil says what the relay does
            self.set_relay(unit, bool(set_values[0]) == relay.closed)
            return None
        on = self.relay_closed[unit] == relay.closed  # the coil/input's value in this state
        reg, bit = divmod(address, 16)
        registers[reg] = (registers[reg] | (1 << bit)) if on else (registers[reg] & ~(1 << bit))
        return None
