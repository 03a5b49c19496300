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
            # asyncio.timeout, not wait_for: on 3.11 a cancel arriving as the port becomes
            # readable is swallowed by wait_for, and the bus task would go on polling
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await ready
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


class _Inbox(asyncio.Protocol):
    """Bytes from the converter, kept until read or discarded."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.more = asyncio.Event()
        self.lost: Exception | None = None
        self.tcp: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.tcp = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.more.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("closed by the converter")
        self.more.set()


class TcpTransport:
    """A transparent serial-to-Ethernet converter in front of the RS-485 bus. What arrives is
    kept in a buffer of its own, so that `discard_input` can drop a late reply before the
    next request, as the serial port's flush does."""

    def __init__(self, host: str, port: int) -> None:
        self.name = f"tcp://{host}:{port}"
        self.host, self.port = host, port
        self._inbox: _Inbox | None = None

    async def open(self) -> None:
        if self._inbox is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(5):
                _, inbox = await loop.create_connection(_Inbox, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise DeviceUnreachable(f"cannot connect to {self.name}: {exc}") from exc
        self._inbox = inbox

    async def write(self, data: bytes) -> None:
        inbox = self._require()
        if inbox.lost is not None or inbox.tcp is None or inbox.tcp.is_closing():
            await self.close()
            raise DeviceUnreachable(f"{self.name}: connection lost: {inbox.lost}")
        inbox.tcp.write(data)  # a frame is a few hundred bytes: no flow control needed

    async def read(self, timeout: float) -> bytes:
        inbox = self._require()
        if not inbox.buf and inbox.lost is None:
            inbox.more.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await inbox.more.wait()
        data = bytes(inbox.buf)
        inbox.buf.clear()
        if not data and inbox.lost is not None:
            await self.close()
            raise DeviceUnreachable(f"{self.name} closed the connection: {inbox.lost}")
        return data

    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return len(self._inbox.buf) if self._inbox is not None else 0

    def discard_input(self) -> None:
        if self._inbox is not None:
            self._inbox.buf.clear()

    async def close(self) -> None:
        inbox, self._inbox = self._inbox, None
        if inbox is not None and inbox.tcp is not None:
            inbox.tcp.close()

    def _require(self) -> _Inbox:
        if self._inbox is None:
            raise DeviceUnreachable(f"{self.name} is not connected")
        return self._inbox


def transport_for(port: str, *, baud: int, parity: str = "E") -> Transport:
    """'/dev/ttyUSB0' → serial; 'tcp://10.0.0.5:4001' → a serial-over-TCP converter."""
    if port.startswith("tcp://"):
        host, _, tcp_port = port[len("tcp://") :].rpartition(":")
        return TcpTransport(host, int(tcp_port))
    return SerialTransport(port, baud=baud, parity=parity)
