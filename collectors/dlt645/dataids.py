"""The DI table (``dataids.toml``) and the conversion of DATA fields to values and back.

Values leave the codec exact: numbers as `Decimal` (317.76, not 317.76000000000002), times
as naive `datetime` / `date` / `time` in the meter's local time; converting to float and UTC
is the collector's job.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from pathlib import Path

from collectors.dlt645.codec import bcd_to_int, int_to_bcd
from collectors.exceptions import ConfigError, FrameError

_NUMERIC = re.compile(r"^(-?)(X+)(?:\.(X+))?$")
TIME_FORMATS = {"YYMMDDWW": 4, "hhmmss": 3, "YYMMDDhhmm": 5, "YYMMDDhhmmss": 6}

Value = Decimal | datetime | date | time
NOT_AVAILABLE = b"\xff"  # an item a meter does not have, repeated over its width


@dataclass(frozen=True, slots=True)
class FieldFormat:
    text: str
    size: int  # bytes on the wire
    decimals: int = 0
    signed: bool = False

    @classmethod
    def parse(cls, text: str) -> FieldFormat:
        if text in TIME_FORMATS:
            return cls(text, TIME_FORMATS[text])
        m = _NUMERIC.match(text)
        if not m:
            raise ConfigError(f"unknown DL/T 645 format {text!r}")
        digits = len(m.group(2)) + len(m.group(3) or "")
        if digits % 2:
            raise ConfigError(f"format {text!r} has an odd number of digits")
        return cls(text, digits // 2, len(m.group(3) or ""), bool(m.group(1)))

    @property
    def is_time(self) -> bool:
        return self.text in TIME_FORMATS

    def decode(self, raw: bytes) -> Value | None:
        """The value; None for an item the meter fills with FF ("not available", e.g. Ub
        and Uc of a single-phase meter in the voltage block)."""
        if len(raw) != self.size:
            raise FrameError(f"{self.text}: expected {self.size} bytes, got {len(raw)}")
        if raw == NOT_AVAILABLE * self.size:
            return None
        if self.is_time:
            return _decode_time(self.text, raw)
        negative = False
        if self.signed and raw[-1] & 0x80:
            negative = True
            raw = raw[:-1] + bytes([raw[-1] & 0x7F])
        value = Decimal(bcd_to_int(raw)).scaleb(-self.decimals)
        return -value if negative else value

    def encode(self, value: Value | float | None) -> bytes:
        if value is None:
            return NOT_AVAILABLE * self.size
        if self.is_time:
            return _encode_time(self.text, value)  # type: ignore[arg-type]
        exact = value if isinstance(value, Decimal) else Decimal(str(value))
        scaled = int(exact.scaleb(self.decimals).to_integral_value())
        if scaled < 0 and not self.signed:
            raise ValueError(f"{self.text} cannot hold {value}")
        raw = int_to_bcd(abs(scaled), self.size)  # ValueError when it does not fit
        if self.signed:
            if raw[-1] & 0x80:
                raise ValueError(f"{self.text} cannot hold {value}: the top bit is the sign")
            if scaled < 0:
                raw = raw[:-1] + bytes([raw[-1] | 0x80])
        return raw


def _decode_time(fmt: str, raw: bytes) -> Value:
    d = [f"{b:02X}" for b in raw[::-1]]  # most significant first: YY MM DD …
    try:
        n = [int(x) for x in d]
    except ValueError:
        raise FrameError(f"{fmt}: not BCD: {raw.hex(' ')}") from None
    try:
        if fmt == "YYMMDDWW":
            return date(2000 + n[0], n[1], n[2])
        if fmt == "hhmmss":
            return time(n[0], n[1], n[2])
        if fmt == "YYMMDDhhmm":
            return datetime(2000 + n[0], n[1], n[2], n[3], n[4])
        return datetime(2000 + n[0], n[1], n[2], n[3], n[4], n[5])
    except ValueError as exc:
        raise FrameError(f"{fmt}: {exc}: {raw.hex(' ')}") from None


def _encode_time(fmt: str, value: datetime | date | time) -> bytes:
    if fmt == "YYMMDDWW":
        assert isinstance(value, date)
        digits = f"{value:%y%m%d}{value.isoweekday() % 7:02d}"  # Sunday is 0
    elif fmt == "hhmmss":
        digits = f"{value:%H%M%S}"
    elif fmt == "YYMMDDhhmm":
        digits = f"{value:%y%m%d%H%M}"
    else:
        digits = f"{value:%y%m%d%H%M%S}"
    return bytes.fromhex(digits)[::-1]


@dataclass(frozen=True, slots=True)
class DataId:
    di: int
    name: str
    fields: tuple[tuple[FieldFormat, str], ...]  # (format, quantity or "")
    group: str = ""
    record: bool = False  # repeated records (load curve): the fields repeat
    key: str = ""  # the table's key, e.g. "050601NN"
    event: str = ""  # an event counter: the event kind it counts …
    records: str = ""  # … and the pattern of its records, e.g. "031100NN"

    @property
    def size(self) -> int:
        return sum(f.size for f, _ in self.fields)

    def decode(self, data: bytes) -> list[tuple[str, Value | None]]:
        """DATA after the DI → [(quantity or format, value)] for one record / item."""
        if len(data) != self.size:
            raise FrameError(f"DI {self.di:08X}: expected {self.size} data bytes, got {len(data)}")
        out, pos = [], 0
        for fmt, quantity in self.fields:
            out.append((quantity or fmt.text, fmt.decode(data[pos : pos + fmt.size])))
            pos += fmt.size
        return out

    def decode_records(self, data: bytes) -> list[list[tuple[str, Value | None]]]:
        if not self.record:
            return [self.decode(data)]
        if len(data) % self.size:
            raise FrameError(
                f"DI {self.di:08X}: {len(data)} bytes are not whole {self.size}-byte records"
            )
        return [self.decode(data[i : i + self.size]) for i in range(0, len(data), self.size)]

    def encode(self, values: list[Value | float | None]) -> bytes:
        if len(values) != len(self.fields):
            raise ValueError(
                f"DI {self.di:08X} has {len(self.fields)} fields, got {len(values)} values"
            )
        return b"".join(fmt.encode(v) for (fmt, _), v in zip(self.fields, values, strict=True))


@cache
def table() -> dict[str, DataId]:
    """The DI table, keyed by its 8-character pattern (e.g. '00010000', '050601NN')."""
    raw = tomllib.loads(Path(__file__).with_name("dataids.toml").read_text("utf-8"))
    out: dict[str, DataId] = {}
    for key, spec in raw.items():
        fields = tuple((FieldFormat.parse(f), q) for f, q in spec["fields"])
        di = int(key.replace("NN", "00"), 16)
        out[key] = DataId(
            di,
            spec["name"],
            fields,
            spec.get("group", ""),
            spec.get("record", False),
            key,
            spec.get("event", ""),
            spec.get("records", ""),
        )
    return out


def group(name: str) -> list[DataId]:
    """The entries of one group ("instant", "event", "clock", "frozen", "curve"), in file
    order: which DIs a job reads is data, not numbers in the collector."""
    return [e for e in table().values() if e.group == name]


def singles(di: int) -> tuple[int, ...]:
    """The single-item DIs that carry the fields of block `di` one by one (a meter that
    refuses the block may serve them), found in the table by quantity and format; () when
    `di` is no block or an item has no single DI."""
    entry = lookup(di)
    if len(entry.fields) < 2 or entry.record:
        return ()
    single = {
        e.fields[0]: e.di
        for e in table().values()
        if len(e.fields) == 1 and "NN" not in e.key and e.fields[0][1]
    }
    found = tuple(single.get(f) for f in entry.fields)
    return () if None in found else found  # type: ignore[return-value]


def lookup(di: int) -> DataId:
    """The entry for a DI; 'NN' entries match any last byte 01..3E."""
    key = f"{di:08X}"
    entries = table()
    if key in entries:
        return entries[key]
    pattern = key[:6] + "NN"
    if pattern in entries and 0x01 <= di & 0xFF <= 0x3E:
        base = entries[pattern]
        return replace(base, di=di, name=base.name.replace("NN", str(di & 0xFF)))
    raise KeyError(f"DI {key} is not in collectors/dlt645/dataids.toml")


def nth(pattern: str, n: int) -> int:
    """'050601NN', 3 → 0x05060103."""
    return int(pattern.replace("NN", f"{n:02X}"), 16)
