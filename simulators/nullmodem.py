"""Two serial ports wired to each other (a null-modem cable) from two pty pairs, in-process.

`a` and `b` are device paths (/dev/pts/N) to open with pyserial from either side; bytes
written to one arrive at the other. Used where both ends must open a path by name (pymodbus'
serial server and client)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty


class NullModem:
    def __init__(self) -> None:
        self._fds: list[int] = []
        self.a = self.b = ""
        self._masters: tuple[int, int] | None = None

    async def start(self) -> None:
        ma, sa = os.openpty()
        mb, sb = os.openpty()
        for fd in (ma, sa, mb, sb):
            tty.setraw(fd)
        for fd in (ma, mb):
            os.set_blocking(fd, False)
        self._fds = [ma, sa, mb, sb]
        self._masters = (ma, mb)
        self.a, self.b = os.ttyname(sa), os.ttyname(sb)
        loop = asyncio.get_running_loop()
        loop.add_reader(ma, self._copy, ma, mb)
        loop.add_reader(mb, self._copy, mb, ma)

    @staticmethod
    def _copy(src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, os.read(src, 4096))

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._masters:
            for fd in self._masters:
                loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds, self._masters = [], None
