"""One Modbus read with pymodbus' failures translated into gridread's device errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus import ModbusException
from pymodbus.exceptions import ConnectionException, ModbusIOException

from collectors.exceptions import DeviceRejected, DeviceTimeout, DeviceUnreachable, FrameError

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


async def read_registers(
    read: Callable[..., Awaitable[Any]], *, address: int, count: int, unit: int, where: str
) -> list[int]:
    """`read` is a pymodbus client's read_holding_registers or read_input_registers; `where`
    names the device in messages ("unit 3 at 10.0.0.5:502")."""
    what = f"read of {count} registers from {address}"
    try:
        response = await read(address, count=count, device_id=unit)
    except ModbusIOException as exc:
        raise DeviceTimeout(f"{where}: no reply to {what}") from exc
    except ConnectionException as exc:
        raise DeviceUnreachable(f"{where}: {exc}") from exc
    except ModbusException as exc:
        raise FrameError(f"{where}: {exc}") from exc
    if response.isError():
        code = getattr(response, "exception_code", None)
        raise DeviceRejected(
            f"{where} answered exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) to {what}",
            code,
        )
    return response.registers
