"""A Modbus meter's load switch, described in its register map (data, not code)::

    [relay]
    coil = 0                  # the relay's coil: function 05 writes it
    closed = true             # the coil's value while the relay is closed (supply on)
    state = "discrete"        # read back: "coil" (01, the coil itself) or "discrete" (02)
    state_address = 0         # the discrete input (default: the coil's address)
    [relay.demand_limit]      # optional: a demand limit the meter enforces
    address = 40              # holding register (06 / 16 write it)
    type = "uint16"           # uint16 | uint32
    scale = 0.01              # kW = raw × scale

`parse_relay` validates the table (one-line `ConfigError`s); `ModbusRelay` operates it over
its own connection (Modbus TCP serves several) and reads the state back.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from collectors.exceptions import (
    ConfigError,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    FrameError,
)
from collectors.modbus.requests import EXCEPTION_NAMES

LIMIT_TYPES = {"uint16": (">H", 1), "uint32": (">I", 2)}


@dataclass(frozen=True, slots=True)
class DemandLimit:
    address: int
    type: str = "uint16"
    scale: float = 1.0  # kW per unit of the register

    def encode(self, kw: float) -> list[int]:
        fmt, width = LIMIT_TYPES[self.type]
        raw = round(kw / self.scale)
        if not 0 <= raw < 1 << (16 * width):
            raise ValueError(f"a demand limit of {kw} kW does not fit a {self.type} × {self.scale}")
        return list(struct.unpack(f">{width}H", struct.pack(fmt, raw)))

    def decode(self, words: list[int]) -> float:
        fmt, width = LIMIT_TYPES[self.type]
        raw = struct.unpack(fmt, struct.pack(f">{width}H", *words))[0]
        return round(raw * self.scale, 6)


@dataclass(frozen=True, slots=True)
class RelaySpec:
    coil: int
    closed: bool = True
    state: str = "coil"  # or "discrete"
    state_address: int | None = None
    demand_limit: DemandLimit | None = None

    @property
    def read_address(self) -> int:
        return self.coil if self.state_address is None else self.state_address


def _address(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise ConfigError(f"{where} = {value!r}; expected an integer 0–65535")
    return value


def parse_relay(data: Any, *, source: str) -> RelaySpec | None:
    """The map's ``[relay]`` table, or None when the meter has no switch."""
    if data is None:
        return None
    where = f"{source}: relay"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(data) - {"coil", "closed", "state", "state_address", "demand_limit"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    coil = _address(data.get("coil"), f"{where}.coil")
    closed = data.get("closed", True)
    if not isinstance(closed, bool):
        raise ConfigError(f"{where}.closed = {closed!r}; expected true or false")
    state = data.get("state", "coil")
    if state not in ("coil", "discrete"):
        raise ConfigError(f"{where}.state = {state!r}; expected 'coil' or 'discrete'")
    state_address = data.get("state_address")
    if state_address is not None:
        _address(state_address, f"{where}.state_address")
    limit = data.get("demand_limit")
    demand = None
    if limit is not None:
        if not isinstance(limit, dict) or set(limit) - {"address", "type", "scale"}:
            raise ConfigError(f"{where}.demand_limit: expected address, type and scale")
        ltype = limit.get("type", "uint16")
        if ltype not in LIMIT_TYPES:
            raise ConfigError(f"{where}.demand_limit.type = {ltype!r}; expected uint16 or uint32")
        scale = limit.get("scale", 1.0)
        if not isinstance(scale, int | float) or isinstance(scale, bool) or scale <= 0:
            raise ConfigError(f"{where}.demand_limit.scale = {scale!r}; expected a number > 0")
        address = _address(limit.get("address"), f"{where}.demand_limit.address")
        demand = DemandLimit(address, ltype, float(scale))
    return RelaySpec(coil, closed, state, state_address, demand)


class ModbusRelay:
    """Operates one unit's relay: write the coil, read the state back."""

    def __init__(
        self, *, host: str, port: int, unit_id: int, spec: RelaySpec, timeout: float = 2.0
    ) -> None:
        self.spec = spec
        self.unit_id = unit_id
        self.where = f"unit {unit_id} at {host}:{port}"
        self.client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout, retries=0, reconnect_delay=0
        )

    async def _call(self, what: str, request: Callable[[], Awaitable[Any]]) -> Any:
        if not self.client.connected and not await self.client.connect():
            raise DeviceUnreachable(f"cannot connect to {self.where}")
        try:
            response = await request()
        except ModbusIOException as exc:
            raise DeviceTimeout(f"{self.where}: no reply to {what}") from exc
        except ConnectionException as exc:
            raise DeviceUnreachable(f"{self.where}: {exc}") from exc
        except ModbusException as exc:
            raise FrameError(f"{self.where}: {exc}") from exc
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceRejected(
                f"{self.where} answered exception {code}"
                f" ({EXCEPTION_NAMES.get(code, 'unknown')}) to {what}",
                code,
                retryable=False,
            )
        return response

    async def switch(self, close: bool) -> None:
        coil = self.spec.coil
        value = self.spec.closed if close else not self.spec.closed
        await self._call(
            f"write of coil {coil} = {int(value)}",
            lambda: self.client.write_coil(coil, value, device_id=self.unit_id),
        )

    async def is_closed(self) -> bool:
        address = self.spec.read_address
        if self.spec.state == "discrete":
            what = f"read of discrete input {address}"
            read = self.client.read_discrete_inputs
        else:
            what = f"read of coil {address}"
            read = self.client.read_coils
        response = await self._call(what, lambda: read(address, count=1, device_id=self.unit_id))
        return bool(response.bits[0]) == self.spec.closed

    async def set_demand_limit(self, kw: float) -> float:
        """Write the limit and read it back (kW as the meter holds it)."""
        limit = self.spec.demand_limit
        if limit is None:
            raise DeviceRejected(f"{self.where}: its register map has no demand limit", 1)
        words = limit.encode(kw)
        await self._call(
            f"write of the demand limit at {limit.address}",
            lambda: self.client.write_registers(limit.address, words, device_id=self.unit_id),
        )
        response = await self._call(
            f"read of the demand limit at {limit.address}",
            lambda: self.client.read_holding_registers(
                limit.address, count=len(words), device_id=self.unit_id
            ),
        )
        return limit.decode(list(response.registers))

    def close(self) -> None:
        self.client.close()
