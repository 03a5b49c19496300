"""Modbus register maps as data, and the pure conversion between registers and values.

A map file (TOML) names the function (holding or input registers), the word order of
multi-register values, how far apart two fields may be and still be read in one request,
and one entry per field::

    function = "holding"      # or "input"
    word_order = "big"        # "big": high word first; "little": low word first
    max_gap = 4               # unused registers a coalesced read may span
    max_registers = 125       # registers per request the device accepts (Modbus allows 125)

    [[field]]
    quantity = "32.7.0"       # OBIS code from ingest/quantities.toml
    address = 0               # 0-based register address (protocol address, not 4xxxx)
    type = "uint16"           # int16 uint16 int32 uint32 float32 int64 uint64 float64
    scale = 0.1               # engineering value = raw × scale + offset
    # offset = 0.0
    # word_order = "little"   # overrides the map's word order for this field
    # decimals = 2            # round the value to this many decimal places

Integer values keep the decimals of their scale (2316 × 0.1 → 231.6); float values are
rounded to the shortest decimal that is the same float32/float64 on the wire (230.2, not
230.1999969482422), then scaled. `decimals` overrides both.

Nothing here does I/O: `RegisterMap.plan()` says which blocks to read, `decode()` turns a
block's registers into values, `encode()` does the reverse for the simulator.
"""

from __future__ import annotations

import math
import struct
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from collectors.exceptions import ConfigError, FrameError
from collectors.modbus.relay import RelaySpec, parse_relay
from ingest.exceptions import UnknownQuantity
from ingest.quantities import quantity as lookup_quantity

MAPS_DIR = Path(__file__).with_name("maps")
MAX_REGISTERS_PER_READ = 125  # Modbus PDU limit for function 03/04; a map may ask for fewer

# type name → (struct format of the whole value, big-endian, registers it spans)
TYPES: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float64": (">d", 4),
}
FUNCTIONS = {"holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class Field:
    quantity: str
    address: int
    type: str
    scale: float = 1.0
    offset: float = 0.0
    word_order: str = "big"
    decimals: int | None = None  # from the map; None: as the type and scale imply
    _digits: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_digits", self.digits)

    @property
    def width(self) -> int:
        return TYPES[self.type][1]

    @property
    def digits(self) -> int | None:
        """Decimal places a value is rounded to: the map's `decimals`, else those an integer
        register carries (scale 0.01 → 2); None for floats (see `decode`)."""
        if self.decimals is not None:
            return self.decimals
        if self.type.startswith("float"):
            return None
        exponents = (
            Decimal(repr(x)).normalize().as_tuple().exponent for x in (self.scale, self.offset)
        )
        return max(0, *(-e for e in exponents if isinstance(e, int)))

    def decode(self, words: list[int]) -> float:
        if self.word_order == "little":
            words = words[::-1]
        fmt = TYPES[self.type][0]
        raw = struct.unpack(fmt, struct.pack(f">{len(words)}H", *words))[0]
        if self._digits is None:  # a float: its own digits, not its binary expansion
            return _scaled_float(raw, fmt, self.scale, self.offset)
        value = raw * self.scale + self.offset
        # 2316 × 0.1 is 231.60000000000002 in binary; the meter meant 231.6.
        return round(value, self._digits)

    def encode(self, value: float) -> list[int]:
        fmt, width = TYPES[self.type]
        raw: float | int
        if isinstance(value, int) and self.scale == 1 and self.offset == 0:
            raw = value  # exact: float division would round 64-bit integers
        else:
            raw = (value - self.offset) / self.scale
            if not fmt.endswith(("f", "d")):
                raw = round(raw)
        words = list(struct.unpack(f">{width}H", struct.pack(fmt, raw)))
        return words[::-1] if self.word_order == "little" else words


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: `count` registers from `address`, holding `fields`."""

    address: int
    count: int
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class RegisterMap:
    name: str
    function: int  # 3 holding, 4 input
    fields: tuple[Field, ...]
    max_gap: int = 4
    max_registers: int = MAX_REGISTERS_PER_READ  # per request, as the device accepts
    relay: RelaySpec | None = None  # the load switch ([relay], collectors/modbus/relay.py)

    def plan(self) -> list[ReadBlock]:
        """Coalesce fields into as few requests as the gap and size limits allow."""
        blocks: list[ReadBlock] = []
        current: list[Field] = []
        for f in sorted(self.fields, key=lambda f: f.address):
            if current:
                start = current[0].address
                end = max(c.address + c.width for c in current)
                if (
                    f.address - end > self.max_gap
                    or f.address + f.width - start > self.max_registers
                ):
                    blocks.append(_block(current))
                    current = []
            current.append(f)
        if current:
            blocks.append(_block(current))
        return blocks

    def decode(self, block: ReadBlock, registers: list[int]) -> list[tuple[str, float]]:
        if len(registers) < block.count:
            raise FrameError(
                f"{self.name}: expected {block.count} registers from {block.address},"
                f" got {len(registers)}"
            )
        out = []
        for f in block.fields:
            i = f.address - block.address
            out.append((f.quantity, f.decode(registers[i : i + f.width])))
        return out

    def encode(self, values: dict[str, float]) -> dict[int, int]:
        """Register address → word for every field whose quantity is in `values`."""
        out: dict[int, int] = {}
        for f in self.fields:
            if f.quantity in values:
                for i, word in enumerate(f.encode(values[f.quantity])):
                    out[f.address + i] = word
        return out

    @property
    def resolution(self) -> dict[str, float]:
        """The smallest step each quantity can take on the wire (its scale, for integers)."""
        return {
            f.quantity: (
                10.0**-f.decimals
                if f.decimals is not None
                else 0.0
                if f.type.startswith("float")
                else abs(f.scale)
            )
            for f in self.fields
        }


def _shortest(raw: float, fmt: str) -> str:
    """The shortest decimal that packs to the same float32/float64 as `raw`."""
    if fmt == ">d":
        return repr(raw)
    packed = struct.pack(fmt, raw)
    for digits in range(6, 10):  # float32: 6 digits always survive, 9 always round-trip
        text = f"{raw:.{digits}g}"
        if struct.pack(fmt, float(text)) == packed:
            return text
    return repr(raw)


def _scaled_float(raw: float, fmt: str, scale: float, offset: float) -> float:
    if not math.isfinite(raw):  # NaN/inf on the wire: kept, for the plausibility screen
        return raw * scale + offset
    text = _shortest(raw, fmt)
    if scale == 1 and offset == 0:
        return float(text)
    return float(Decimal(text) * Decimal(repr(scale)) + Decimal(repr(offset)))


def _block(fields: list[Field]) -> ReadBlock:
    start = fields[0].address
    end = max(f.address + f.width for f in fields)
    return ReadBlock(start, end - start, tuple(fields))


def load_register_map(name_or_path: str | Path) -> RegisterMap:
    """Load a map by bundled name (``three_phase_meter``) or by path.

    Raises `ConfigError` with a one-line message naming the file and the bad entry."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MAPS_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        bundled = ", ".join(sorted(p.stem for p in MAPS_DIR.glob("*.toml")))
        raise ConfigError(f"{path}: register map not found (bundled maps: {bundled})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_register_map(data, source=str(path), name=path.stem)


def parse_register_map(data: dict, *, source: str, name: str) -> RegisterMap:
    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    function = data.get("function", "holding")
    if function not in FUNCTIONS:
        raise fail(f"function = {function!r}; expected one of {', '.join(FUNCTIONS)}")
    word_order = data.get("word_order", "big")
    if word_order not in ("big", "little"):
        raise fail(f"word_order = {word_order!r}; expected 'big' or 'little'")
    max_gap = data.get("max_gap", 4)
    if not isinstance(max_gap, int) or isinstance(max_gap, bool) or max_gap < 0:
        raise fail(f"max_gap = {max_gap!r}; expected a non-negative integer")
    max_registers = data.get("max_registers", MAX_REGISTERS_PER_READ)
    if (
        not isinstance(max_registers, int)
        or isinstance(max_registers, bool)
        or not 1 <= max_registers <= MAX_REGISTERS_PER_READ
    ):
        raise fail(
            f"max_registers = {max_registers!r}; expected an integer 1–{MAX_REGISTERS_PER_READ}"
        )
    entries = data.get("field")
    if not isinstance(entries, list) or not entries:
        raise fail("no [[field]] entries")
    fields: list[Field] = []
    seen: dict[int, str] = {}
    for n, entry in enumerate(entries, 1):
        where = f"field {n} ({entry.get('quantity', '?')})"
        unknown = set(entry) - {
            "quantity",
            "address",
            "type",
            "scale",
            "offset",
            "word_order",
            "decimals",
        }
        if unknown:
            raise fail(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            lookup_quantity(str(entry.get("quantity")))
        except UnknownQuantity as exc:
            raise fail(f"{where}: {exc}") from None
        ftype = entry.get("type")
        if ftype not in TYPES:
            raise fail(f"{where}: type = {ftype!r}; expected one of {', '.join(TYPES)}")
        address = entry.get("address")
        if not isinstance(address, int) or not 0 <= address <= 0xFFFF:
            raise fail(f"{where}: address = {address!r}; expected an integer 0–65535")
        scale = entry.get("scale", 1.0)
        offset = entry.get("offset", 0.0)
        for key, val in (("scale", scale), ("offset", offset)):
            if not isinstance(val, int | float) or isinstance(val, bool) or not math.isfinite(val):
                raise fail(f"{where}: {key} = {val!r}; expected a number")
        if scale == 0:
            raise fail(f"{where}: scale must not be 0")
        order = entry.get("word_order", word_order)
        if order not in ("big", "little"):
            raise fail(f"{where}: word_order = {order!r}; expected 'big' or 'little'")
        decimals = entry.get("decimals")
        if decimals is not None and (
            not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 15
        ):
            raise fail(f"{where}: decimals = {decimals!r}; expected an integer 0–15")
        f = Field(entry["quantity"], address, ftype, float(scale), float(offset), order, decimals)
        last = address + f.width - 1
        if last > 0xFFFF:
            raise fail(
                f"{where}: address = {address}: a {ftype} spans {f.width} registers,"
                f" {address}–{last}; the last must be ≤ 65535"
            )
        if f.width > max_registers:
            raise fail(
                f"{where}: a {ftype} spans {f.width} registers, more than"
                f" max_registers = {max_registers}"
            )
        for a in range(address, address + f.width):
            if a in seen:
                raise fail(f"{where}: register {a} is already used by {seen[a]}")
            seen[a] = where
        fields.append(f)
    relay = parse_relay(data.get("relay"), source=source)  # the load switch, if it has one
    return RegisterMap(name, FUNCTIONS[function], tuple(fields), max_gap, max_registers, relay)
