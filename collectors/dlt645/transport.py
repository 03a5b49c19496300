"""Byte transports for a DL/T 645 bus: a serial port (RS-485 adapter) or a serial-over-TCP
converter. Both are driven from asyncio; neither knows anything about frames."""

from __future__ import annotations

import asyncio
import contextlib
import termios
from typing import Protocol

import serial

from collectors.exceptions import DeviceUnreachable


class Transport(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def read(self, timeout: float) -> bytes:
        """What arrives within `timeout` seconds (b"" if nothing)."""
        ...

    def discard_input(self) -> None: ...

    async def close(self) -> None: ...


PARITY = {"E": serial.PARITY_EVEN, "N": serial.PARITY_NONE, "O": serial.PARITY_ODD}
# A port that went away (adapter unplugged, pty closed) fails with OSError / SerialException
# on read and write, but with termios.error (not an OSError) on flush and attribute calls.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


class SerialTransport:
    """pyserial in non-blocking mode, woken by the event loop when the port is readable
    (POSIX: the port's file descriptor)."""

    def __init__(self, port: str, *, baud: int = 2400, parity: str = "E") -> None:
        self.name = port
        self.baud = baud
        self.parity = parity
        self._serial: serial.Serial | None = None

    async def open(self) -> None:
        if self._serial is not None:
            return
        try:
            self._serial = serial.Serial(
                self.name, self.baud, bytesize=8, parity=PARITY[self.parity], stopbits=1, timeout=0
            )
        except PORT_ERRORS as exc:
            raise DeviceUnreachable(f"cannot open serial port {self.name}: {exc}") from exc

    async def write(self, data: bytes) -> None:
        port = self._require()
        try:
            port.write(data)
        except PORT_ERRORS as exc:
            await self.close()
            raise DeviceUnreachable(f"{self.name}: write failed: {exc}") from exc

    async def read(self, timeout: float) -> bytes:
        port = self._require()
        data = await self._read_now(port)
        if data or timeout <= 0:
            return data
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = port.fileno()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready, timeout)
        finally:
            loop.remove_reader(fd)
        return await self._read_now(port)

    async def _read_now(self, port: serial.Serial) -> bytes:
        try:
            return port.read(4096)
        except PORT_ERRORS as exc:
            await self.close()
            raise DeviceUnreachable(f"{self.name}: read failed: {exc}") from exc

    def discard_input(self) -> None:
        if self._serial is None:
            return
        try:
            self._serial.reset_input_buffer()
        except PORT_ERRORS as exc:
            self._drop()
            raise DeviceUnreachable(f"{self.name}: port lost: {exc}") from exc

    async def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        """Forget the port (reopened on the next exchange)."""
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def _require(self) -> serial.Serial:
        if self._serial is None:
            raise DeviceUnreachable(f"serial port {self.name} is not open")
        return self._serial


class TcpTransport:
    """A transparent serial-to-Ethernet converter in front of the RS-485 bus."""

    def __init__(self, host: str, port: int) -> None:
        self.name = f"tcp://{host}:{port}"
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), 5
            )
        except (OSError, TimeoutError) as exc:
            raise DeviceUnreachable(f"cannot connect to {self.name}: {exc}") from exc

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise DeviceUnreachable(f"{self.name} is not connected")
        self._writer.write(data)
        try:
            await self._writer.drain()
        except OSError as exc:
            await self.close()
            raise DeviceUnreachable(f"{self.name}: {exc}") from exc

    async def read(self, timeout: float) -> bytes:
        if self._reader is None:
            raise DeviceUnreachable(f"{self.name} is not connected")
        try:
            data = await asyncio.wait_for(self._reader.read(4096), timeout)
        except TimeoutError:
            return b""
        if not data:
            await self.close()
            raise DeviceUnreachable(f"{self.name} closed the connection")
        return data

    def discard_input(self) -> None:
        pass  # late replies are skipped by the session's DI check

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None


def transport_for(port: str, *, baud: int, parity: str = "E") -> Transport:
    """'/dev/ttyUSB0' → serial; 'tcp://10.0.0.5:4001' → a serial-over-TCP converter."""
    if port.startswith("tcp://"):
        host, _, tcp_port = port[len("tcp://") :].rpartition(":")
        return TcpTransport(host, int(tcp_port))
    return SerialTransport(port, baud=baud, parity=parity)
