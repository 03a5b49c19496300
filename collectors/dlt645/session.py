"""The master side of one RS-485 bus: one request in flight, timing derived from the baud.

`Dlt645Bus.exchange(frame)` waits for the inter-frame gap, discards what the line holds, sends
the frame (with the wake-up preamble), and returns the reply addressed back to it: a reply
frame, which may be an abnormal reply (`frame.is_error`, a response object, not an
exception). No reply within the timeout is `DeviceTimeout`; only garbled bytes within it is
`FrameError`.

A meter that answers after the timeout answers while the next request waits: a reply that
carries a DI (reads) is taken only if it is the DI asked, anything else is counted in
`stale_replies` and skipped. An abnormal reply carries no DI; it is charged to the request
in flight, the only one it can belong to once stale input is discarded before each request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from collectors.dlt645 import codec
from collectors.dlt645.codec import Frame, FrameBuffer
from collectors.dlt645.dataids import Value, lookup
from collectors.dlt645.transport import Transport
from collectors.exceptions import DeviceRejected, DeviceTimeout, FrameError

BITS_PER_BYTE = 11  # 8E1: start, 8 data, parity, stop


@dataclass(frozen=True)
class BusTiming:
    baud: int = 2400
    turnaround: float = 0.5  # how long a meter may think before its first byte (seconds)
    gap_bytes: int = 10  # quiet line between frames, in byte times …
    min_gap: float = 0.010  # … but never less than this
    preamble: bytes = codec.PREAMBLE

    @property
    def byte_time(self) -> float:
        return BITS_PER_BYTE / self.baud

    @property
    def gap(self) -> float:
        return max(self.min_gap, self.gap_bytes * self.byte_time)

    def wire(self, nbytes: int) -> float:
        return nbytes * self.byte_time

    def reply_timeout(self, request_bytes: int, reply_bytes: int = 4 + 12 + 200) -> float:
        """Request on the wire, the meter's turnaround, and the reply (by default the
        longest one, L = 200)."""
        return self.wire(request_bytes) + self.turnaround + self.wire(reply_bytes)


class Dlt645Bus:
    def __init__(self, transport: Transport, timing: BusTiming | None = None) -> None:
        self.transport = transport
        self.timing = timing or BusTiming()
        self._lock = asyncio.Lock()
        self._buffer = FrameBuffer()
        self._quiet_at = 0.0  # loop time when the line is free again
        self.bad_frames = 0
        self.stale_replies = 0  # late replies to an earlier request, skipped

    @property
    def name(self) -> str:
        return self.transport.name

    async def exchange(
        self, request: Frame, *, expect_reply: bool = True, reply_bytes: int | None = None
    ) -> Frame | None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            await self.transport.open()
            wait = self._quiet_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            raw = request.to_bytes(preamble=self.timing.preamble)
            self.transport.discard_input()
            self._buffer.clear()
            await self.transport.write(raw)
            sent = loop.time()
            if not expect_reply:  # broadcasts: wait until the frame has left the wire
                self._quiet_at = sent + self.timing.wire(len(raw)) + self.timing.gap
                await asyncio.sleep(self.timing.wire(len(raw)))
                return None
            try:
                timeout = self.timing.reply_timeout(
                    len(raw), *([reply_bytes] if reply_bytes else [])
                )
                return await self._await_reply(request, sent, timeout)
            finally:
                self._quiet_at = loop.time() + self.timing.gap

    async def _await_reply(self, request: Frame, sent: float, timeout: float) -> Frame:
        loop = asyncio.get_running_loop()
        deadline = sent + timeout
        garbled: list[FrameError] = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if garbled:
                    raise FrameError(f"{request.address}: only a garbled reply: {garbled[-1]}")
                raise DeviceTimeout(
                    f"meter {request.address} on {self.name}: no reply to"
                    f" {request.function:02X} within {timeout:.2f} s"
                )
            data = await self.transport.read(remaining)
            if not data:
                continue
            self._buffer.feed(data)
            for item in self._buffer.frames():
                if isinstance(item, FrameError):
                    self.bad_frames += 1
                    garbled.append(item)
                    continue
                if not _answers(request, item):
                    continue
                if _other_di(request, item):
                    self.stale_replies += 1
                    continue
                return item

    # -- reads -----------------------------------------------------------------------------

    async def read(
        self, address: str, di: int, *, blocks: int | None = None, start: datetime | None = None
    ) -> list[list[tuple[str, Value]]]:
        """Read one DI; return its records (one for ordinary items), each [(quantity, value)]."""
        request = codec.read_request(address, di, blocks=blocks, start=start)
        reply = await self.exchange(request)
        assert reply is not None
        if reply.is_error:
            raise DeviceRejected(
                f"meter {address} refused DI {di:08X}: {reply.error!r}",
                code=int(reply.error or 0),
                retryable=False,  # a meter that lacks a data item will lack it next time too
            )
        if reply.data[:4] != request.data[:4]:
            raise FrameError(
                f"meter {address}: asked DI {di:08X}, got {reply.data[:4][::-1].hex()}"
            )
        entry = lookup(di)
        return entry.decode_records(reply.data[4:])


def _other_di(request: Frame, reply: Frame) -> bool:
    """A normal read reply starts with the DI it answers: is it another than the one asked?"""
    reads = (codec.Function.READ, codec.Function.READ_FOLLOWUP)
    return request.function in reads and not reply.is_error and reply.data[:4] != request.data[:4]


def _answers(request: Frame, reply: Frame) -> bool:
    """Is `reply` the answer to `request`? Same function, from the meter asked (any meter
    when the request used wildcards)."""
    if not reply.is_reply or reply.function != request.function:
        return False
    if "A" in request.address.upper():
        return all(
            p == "AA" or p == a
            for p, a in zip(
                (request.address[i : i + 2].upper() for i in range(0, 12, 2)),
                (reply.address[i : i + 2] for i in range(0, 12, 2)),
                strict=True,
            )
        )
    return reply.address == request.address
