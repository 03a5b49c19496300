"""DL/T 645-2007 frames, sans-IO: bytes in, frames out, and the reverse. No serial here.

    [FE FE FE FE] 68 A0 A1 A2 A3 A4 A5 68 C L DATA CS 16

* address: 6 bytes BCD, low byte first (meter 202107072529 → 29 25 07 07 21 20);
  AA… is the wildcard, 99 99 99 99 99 99 the broadcast address;
* C: D7 direction (1 = from the meter), D6 abnormal reply, D5 follow-up frame, D4–D0 function;
* L: length of DATA; each DATA byte travels +0x33 (mod 256);
* CS: sum of every byte from the first 68 through DATA, mod 256.

`decode(buf)` returns ``(consumed, frame)``: ``(0, None)`` means "need more bytes"; bytes
before a frame (wake-up preamble, line noise) are consumed with it. A frame that is complete
but wrong raises `FrameError` naming the expected and the actual value. `FrameBuffer` keeps
the leftovers between reads and hunts past garbage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, IntFlag

from collectors.exceptions import FrameError

START = 0x68
END = 0x16
PREAMBLE = b"\xfe\xfe\xfe\xfe"
WILDCARD = "AAAAAAAAAAAA"
BROADCAST = "999999999999"
MAX_DATA = 200  # the standard caps L at 200 for reads; a larger L is noise


class Function(IntEnum):
    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOWUP = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    RELAY_CONTROL = 0x1C


REPLY = 0x80  # D7: sent by the meter
ABNORMAL = 0x40  # D6: error reply
FOLLOWS = 0x20  # D5: more frames follow (read with 0x12)


class ErrorBits(IntFlag):
    """ERR byte of an abnormal reply."""

    OTHER = 0x01
    NO_DATA = 0x02  # no such data item / not requested data
    UNAUTHORISED = 0x04  # wrong password or no permission
    BAUD_UNCHANGEABLE = 0x08
    TOO_MANY_YEAR_ZONES = 0x10
    TOO_MANY_DAY_PERIODS = 0x20
    TOO_MANY_TARIFFS = 0x40


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame with its DATA already un-offset (the -0x33 applied)."""

    address: str  # 12 BCD digits, most significant first, as printed on the meter
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        return self.control & 0x1F

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.control & ABNORMAL)

    @property
    def has_followup(self) -> bool:
        return bool(self.control & FOLLOWS)

    @property
    def error(self) -> ErrorBits | None:
        """The error bits of an abnormal reply (a response object, not an exception)."""
        if not self.is_error:
            return None
        return ErrorBits(self.data[0] & 0x7F) if self.data else ErrorBits.OTHER

    def to_bytes(self, *, preamble: bytes = PREAMBLE) -> bytes:
        if len(self.data) > 255:
            raise ValueError(f"DATA of {len(self.data)} bytes does not fit the length byte")
        body = (
            bytes([START])
            + address_to_bytes(self.address)
            + bytes([START, self.control, len(self.data)])
            + bytes((b + 0x33) & 0xFF for b in self.data)
        )
        return preamble + body + bytes([sum(body) & 0xFF, END])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Frame:
        """Exactly one frame (preamble allowed); anything else is a FrameError."""
        consumed, frame = decode(raw)
        if frame is None:
            raise FrameError(f"incomplete frame: {raw.hex(' ')}")
        if consumed != len(raw):
            raise FrameError(
                f"{len(raw) - consumed} bytes after the frame: {raw[consumed:].hex(' ')}"
            )
        return frame


class BadFrame(FrameError):
    """A complete frame that is wrong; `consumed` bytes of the buffer can be skipped."""

    def __init__(self, message: str, consumed: int) -> None:
        super().__init__(message)
        self.consumed = consumed


def address_to_bytes(address: str) -> bytes:
    if len(address) != 12 or not all(c in "0123456789AaFf" for c in address):
        raise ValueError(f"meter address must be 12 BCD digits (or A wildcards), got {address!r}")
    return bytes.fromhex(address)[::-1]


def address_from_bytes(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def decode(buf: bytes | bytearray) -> tuple[int, Frame | None]:
    """Find the first frame in `buf`.

    Returns (consumed, frame); (0, None) when more bytes are needed; (n, None) when the first
    n bytes can only be garbage. Raises `BadFrame` for a complete frame that is wrong; its
    `consumed` says how far a caller can skip past it."""
    start = buf.find(START)
    if start < 0:
        return len(buf), None  # all garbage (or preamble)
    if len(buf) - start < 10:
        return start, None
    if buf[start + 7] != START:
        return start + 1, None  # a 68 inside noise: hunt on
    length = buf[start + 9]
    end = start + 10 + length + 2
    if length > MAX_DATA:
        return start + 1, None
    if len(buf) < end:
        return start, None
    body = bytes(buf[start : end - 2])
    checksum = sum(body) & 0xFF
    frame_hex = bytes(buf[start:end]).hex(" ")
    if buf[end - 2] != checksum:
        raise BadFrame(
            f"checksum: expected {checksum:02X}, got {buf[end - 2]:02X} in {frame_hex}", start + 1
        )
    if buf[end - 1] != END:
        raise BadFrame(f"end byte: expected 16, got {buf[end - 1]:02X} in {frame_hex}", start + 1)
    data = bytes((b - 0x33) & 0xFF for b in body[10:])
    return end, Frame(address_from_bytes(body[1:7]), body[8], data)


class FrameBuffer:
    """Accumulates bytes from the line and yields what they hold, frame by frame.

    `frames()` yields `Frame`s and, for complete but bad frames, the `FrameError` (as a value,
    so the caller can count it and go on). Garbage and preambles are skipped; a partial frame
    waits for more bytes. The buffer is bounded: noise cannot grow it past `limit`."""

    def __init__(self, limit: int = 4096) -> None:
        self._buf = bytearray()
        self.limit = limit
        self.skipped = 0  # garbage bytes dropped, for diagnostics

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self.limit:
            drop = len(self._buf) - self.limit
            del self._buf[:drop]
            self.skipped += drop

    def frames(self) -> Iterator[Frame | FrameError]:
        while self._buf:
            try:
                consumed, frame = decode(self._buf)
            except BadFrame as err:
                consumed = err.consumed
                self.skipped += consumed
                del self._buf[:consumed]
                yield err
                continue
            if frame is None:
                if consumed == 0:
                    return
                self.skipped += sum(1 for b in self._buf[:consumed] if b != 0xFE)
                del self._buf[:consumed]
                continue
            skipped = consumed - len(frame.to_bytes(preamble=b""))
            self.skipped += sum(1 for b in self._buf[:skipped] if b != 0xFE)
            del self._buf[:consumed]
            yield frame

    def clear(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)


# -- requests a master sends -------------------------------------------------------------


def di_bytes(di: int) -> bytes:
    """A data identifier (DI3 DI2 DI1 DI0 written as 0x00010000) as sent: DI0 first."""
    return di.to_bytes(4, "little")


def read_request(
    address: str, di: int, *, blocks: int | None = None, start: datetime | None = None
) -> Frame:
    """Read (0x11). With `blocks` (and `start`): a load-record read of N blocks from a time."""
    data = di_bytes(di)
    if blocks is not None:
        data += bytes([blocks])
        if start is not None:
            data += bcd_digits(f"{start:%M%H%d%m%y}")  # mmhhDDMMYY, minute first
    return Frame(address, Function.READ, data)


def read_followup_request(address: str, di: int, seq: int) -> Frame:
    return Frame(address, Function.READ_FOLLOWUP, di_bytes(di) + bytes([seq & 0xFF]))


def read_address_request() -> Frame:
    return Frame(WILDCARD, Function.READ_ADDRESS)


def broadcast_time_request(when: datetime) -> Frame:
    """Broadcast time sync (0x08): ssmmhhDDMMYY, seconds first; meters do not answer."""
    return Frame(BROADCAST, Function.BROADCAST_TIME, bcd_digits(f"{when:%S%M%H%d%m%y}"))


def freeze_request(address: str, when: str = "99999999") -> Frame:
    """Freeze (0x16) at mmhhDDMM; 99999999 freezes now."""
    return Frame(address, Function.FREEZE, bcd_digits(when))


BAUD_BITS = {600: 0x02, 1200: 0x04, 2400: 0x08, 4800: 0x10, 9600: 0x20, 19200: 0x40}


def change_baud_request(address: str, baud: int) -> Frame:
    return Frame(address, Function.CHANGE_BAUD, bytes([BAUD_BITS[baud]]))


class RelayAction(IntEnum):
    DISCONNECT = 0x1A  # 跳闸
    CONNECT_ALLOWED = 0x1B  # 合闸允许
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A  # 保电
    KEEP_POWER_RELEASE = 0x3B


def password_bytes(password: str) -> bytes:
    """ "02020637" (privilege level 02, password 020637, as printed) → PA P0 P1 P2 on the
    wire: the privilege byte first, then the password low byte first (02 37 06 02)."""
    raw = bytes.fromhex(password)
    if len(raw) != 4:
        raise ValueError(f"password must be 8 hex digits (level + 6), got {password!r}")
    return raw[:1] + raw[1:][::-1]


def parse_password(raw: bytes) -> str:
    """PA P0 P1 P2 from the wire → "PAP2P1P0" as printed (the inverse of password_bytes)."""
    return (raw[:1] + raw[1:4][::-1]).hex().upper()


def relay_control_request(
    address: str, *, password: str, operator: str, action: RelayAction, valid_until: datetime
) -> Frame:
    """Relay / alarm control (0x1C): PA P0 P1 P2, C0..C3, N1, N2, valid-until ssmmhhDDMMYY.

    `password` is 8 hex digits, privilege level first as printed ("02123456");
    `operator` is 8 hex digits (C0, its low byte, travels first)."""
    data = (
        password_bytes(password)
        + bytes.fromhex(operator)[::-1]
        + bytes([action, 0x00])
        + bcd_digits(f"{valid_until:%S%M%H%d%m%y}")
    )
    return Frame(address, Function.RELAY_CONTROL, data)


STATUS_WORD_3 = 0x04000503  # 电表运行状态字3: two bytes, low byte first


class Status3(IntFlag):
    """Bits of status word 3 (DL/T 645-2007 appendix: 电表运行状态字3)."""

    SECOND_PERIOD_SET = 0x0001  # bit 0: the second set of day periods runs
    AUX_SUPPLY = 0x0002  # bits 1-2: supply (00 main, 01 auxiliary, 10 battery)
    BATTERY_SUPPLY = 0x0004
    PROGRAMMING_ALLOWED = 0x0008
    RELAY_OPEN = 0x0010  # bit 4: relay state, 1 = open (断), 0 = closed (通)
    SECOND_ZONE_SET = 0x0020
    RELAY_COMMANDED_OPEN = 0x0040  # bit 6: the last relay command was "open"
    PRE_TRIP_ALARM = 0x0080
    KEEP_POWER = 0x1000  # bit 12: 保电 (keep power) in force


def parse_status_word(reply: Frame, di: int = STATUS_WORD_3) -> Status3:
    """The status word of a normal read reply to `di` (DI, then 2 bytes low byte first)."""
    if reply.data[:4] != di_bytes(di) or len(reply.data) != 6:
        raise FrameError(
            f"meter {reply.address}: expected DI {di:08X} and 2 bytes, got {reply.data.hex(' ')}"
        )
    return Status3(int.from_bytes(reply.data[4:6], "little"))


def write_request(address: str, di: int, *, password: str, operator: str, value: bytes) -> Frame:
    """Write (0x14): DI0..DI3, PA P0 P1 P2, C0..C3, then the value."""
    data = di_bytes(di) + password_bytes(password) + bytes.fromhex(operator)[::-1] + value
    return Frame(address, Function.WRITE, data)


def reply(
    request: Frame, data: bytes = b"", *, address: str | None = None, follows: bool = False
) -> Frame:
    """The meter's normal reply to `request` (used by the simulator)."""
    control = REPLY | request.function | (FOLLOWS if follows else 0)
    return Frame(address or request.address, control, data)


def error_reply(request: Frame, bits: ErrorBits, *, address: str | None = None) -> Frame:
    return Frame(address or request.address, REPLY | ABNORMAL | request.function, bytes([bits]))


# -- BCD ---------------------------------------------------------------------------------


def bcd_digits(digits: str) -> bytes:
    """'591223' → bytes 59 12 23 (as written, first pair first)."""
    return bytes.fromhex(digits)


def bcd_to_int(raw: bytes) -> int:
    """Little-endian BCD (low byte first) to an integer; non-decimal nibbles are a FrameError."""
    text = raw[::-1].hex()
    if not text.isdigit():
        raise FrameError(f"not BCD: {raw.hex(' ')}")
    return int(text)


def int_to_bcd(value: int, size: int) -> bytes:
    if value < 0 or value >= 10 ** (2 * size):
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    return bytes.fromhex(f"{value:0{2 * size}d}")[::-1]
