"""The grid's topology in the inventory: ``[[substation]]``, ``[[feeder]]``, ``[[area]]``,
``[[metering_point]]``, ``[[meter_asset]]`` and ``[[replacement]]`` tables (format: the
README's "Grid topology"; tables: `ingest.schema_topology`), parsed and validated as a whole
with one-line errors naming the table, the entry and the field; and the small read interface
analytics use (`placements_between`, `replacements_between`, `areas`, `feeders`).

Instants: an aware date-time is taken as is; a date means local midnight and a date-time
without an offset local time, both in the site's `timezone`. An absent ``valid_from`` is
−infinity (None here), an absent ``valid_to`` open (None).

Storing (with history and audit) is `gridread.topology_store`'s; CSV `gridread.topology_csv`'s.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.exceptions import ConfigError
from gridread.settings import one_line
from gridread.specs import NAME
from ingest.localtime import DEFAULT_TIMEZONE

_Name = Field(min_length=1, max_length=64, pattern=NAME)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def problem(self) -> str | None:
        """What makes the entry inconsistent in itself, naming the field; None if nothing."""
        return None


class SubstationSpec(_Spec):
    name: str = _Name
    voltage_kv: float = Field(gt=0, allow_inf_nan=False)


class FeederSpec(_Spec):
    name: str = _Name
    substation: str = _Name
    voltage_kv: float = Field(default=10.0, gt=0, allow_inf_nan=False)


class AreaSpec(_Spec):
    name: str = _Name
    feeder: str = _Name
    kind: Literal["public", "dedicated"] = "public"
    transformer_kva: float = Field(gt=0, allow_inf_nan=False)
    lv_voltage_kv: float = Field(default=0.4, gt=0, allow_inf_nan=False)


class MeteringPointSpec(_Spec):
    meter: str = _Name
    role: Literal["feeder_head", "area_total", "customer"]
    area: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME)
    feeder: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME)
    phase: Literal["A", "B", "C", "ABC"] = "ABC"
    ct_ratio: float = Field(default=1.0, allow_inf_nan=False)
    pt_ratio: float = Field(default=1.0, allow_inf_nan=False)
    customer_class: str | None = Field(default=None, min_length=1, max_length=64)
    tariff: str | None = Field(default=None, min_length=1, max_length=64)
    location: str | None = Field(default=None, min_length=1, max_length=500)
    valid_from: datetime | None = None  # None: −infinity
    valid_to: datetime | None = None  # exclusive; None: open

    def problem(self) -> str | None:
        """What makes the entry inconsistent, naming the field; None if nothing."""
        for ratio in ("ct_ratio", "pt_ratio"):
            if getattr(self, ratio) <= 0:
                return f"{ratio}: {getattr(self, ratio):g} must be > 0 (multiplier 0)"
        if self.role == "feeder_head":
            if self.area is not None:
                return "area: a feeder_head point names its feeder, not an area"
            if self.feeder is None:
                return "feeder: a feeder_head point names its feeder"
        elif self.feeder is not None:
            return f"feeder: a {self.role} point names its area, not a feeder"
        elif self.area is None:
            return f"area: a {self.role} point names its area"
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            return (
                f"valid_to: {self.valid_to.isoformat()} is not after valid_from"
                f" {self.valid_from.isoformat()}"
            )
        return None

    @property
    def place(self) -> tuple[str, str]:
        return ("feeder", self.feeder) if self.feeder else ("area", self.area or "")

    @property
    def multiplier(self) -> float:
        return self.ct_ratio * self.pt_ratio


class MeterAssetSpec(_Spec):
    meter: str = _Name
    model: str | None = Field(default=None, min_length=1, max_length=64)
    accuracy_class: str | None = Field(default=None, min_length=1, max_length=16)
    ct_class: str | None = Field(default=None, min_length=1, max_length=16)
    pt_class: str | None = Field(default=None, min_length=1, max_length=16)
    installed: date | None = None
    last_verified: date | None = None
    next_verification: date | None = None
    rotation_plan: str | None = Field(default=None, min_length=1, max_length=64)


class ReplacementSpec(_Spec):
    old_meter: str = _Name
    new_meter: str = _Name
    at: datetime
    quantity: str = Field(default="1.8.0", pattern=r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$")
    old_final: float = Field(ge=0, allow_inf_nan=False)
    new_first: float = Field(ge=0, allow_inf_nan=False)

    def problem(self) -> str | None:
        if self.old_meter == self.new_meter:
            return f"new_meter: {self.new_meter} is also the old_meter"
        return None


# config key → (spec, the key identifying an entry); CSV tables use the plural names
SPECS: dict[str, tuple[type[_Spec], tuple[str, ...]]] = {
    "substation": (SubstationSpec, ("name",)),
    "feeder": (FeederSpec, ("name",)),
    "area": (AreaSpec, ("name",)),
    "metering_point": (MeteringPointSpec, ("meter", "valid_from")),
    "meter_asset": (MeterAssetSpec, ("meter",)),
    "replacement": (ReplacementSpec, ("old_meter", "quantity")),
}
INSTANTS = {"valid_from", "valid_to", "at"}


@dataclass
class Topology:
    """Validated entries of each table, each with where it came from (for errors)."""

    entries: dict[str, list[tuple[str, Any]]] = field(
        default_factory=lambda: {key: [] for key in SPECS}
    )
    provided: set[str] = field(default_factory=set)  # tables the source had at all
    source: str = ""

    def __getitem__(self, key: str) -> list[Any]:
        return [spec for _, spec in self.entries[key]]

    def __bool__(self) -> bool:
        return bool(self.provided)


def to_instant(v: Any, tz: ZoneInfo) -> Any:
    """A date → local midnight; a date-time without an offset → local time; else as is."""
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=tz)
    if isinstance(v, date):
        return datetime.combine(v, time(), tz)
    if isinstance(v, str) and v:
        try:
            return to_instant(datetime.fromisoformat(v), tz)
        except ValueError:
            return v  # pydantic names the field and the value
    return v


def parse_entry(key: str, entry: dict[str, Any], where: str, tz: ZoneInfo) -> Any:
    """One table entry validated as its spec; `where` prefixes the one-line error."""
    model, _ = SPECS[key]
    data = {k: to_instant(v, tz) if k in INSTANTS else v for k, v in entry.items()}
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {one_line(exc)}") from None
    if problem := spec.problem():
        raise ConfigError(f"{where}: {problem}")
    return spec


def entry_name(key: str, entry: dict[str, Any] | _Spec) -> str:
    get = entry.get if isinstance(entry, dict) else lambda k: getattr(entry, k, None)
    return str(get(SPECS[key][1][0]) or "?")


def parse_topology(
    config: dict[str, Any], *, source: str, timezone: str = DEFAULT_TIMEZONE
) -> Topology:
    """The topology tables of a config file, each entry validated alone (`validate_topology`
    checks them together)."""
    tz = ZoneInfo(timezone)
    topo = Topology(source=source)
    for key in SPECS:
        if key not in config:
            continue
        entries = config[key]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"{source}: '{key}' must be an array of tables ([[{key}]])")
        topo.provided.add(key)
        for n, entry in enumerate(entries, 1):
            where = f"{source}: {key} {n} ({entry_name(key, entry)})"
            topo.entries[key].append((where, parse_entry(key, entry, where, tz)))
    return topo


_MIN = datetime.min.replace(tzinfo=UTC)


def _day(t: datetime | None) -> str:
    return "the beginning" if t is None else t.isoformat()


def validate_topology(topo: Topology, meters: set[str], *, totals: bool = True) -> None:
    """Check the tables together; the first problem is a one-line ConfigError. `meters`: the
    names of the meters that exist (any protocol); `totals`: check that every area has an
    area_total point (a source without metering points, e.g. an areas CSV imported before
    the points, is not held to it)."""

    def unique(key: str) -> dict[Any, tuple[str, Any]]:
        seen: dict[Any, tuple[str, Any]] = {}
        for where, spec in topo.entries[key]:
            ident = tuple(getattr(spec, k) for k in SPECS[key][1])
            if ident in seen:
                raise ConfigError(f"{where}: {key} {ident[0]} is defined twice")
            seen[ident] = (where, spec)
        return {k[0] if len(k) == 1 else k: v for k, v in seen.items()}

    subs, feeders, areas = unique("substation"), unique("feeder"), unique("area")
    unique("meter_asset"), unique("replacement"), unique("metering_point")

    def known(where: str, what: str, name: str | None, names: Any) -> None:
        if name not in names:
            raise ConfigError(f"{where}: unknown {what} {name!r}")

    for where, f in topo.entries["feeder"]:
        known(where, "substation", f.substation, subs)
    for where, a in topo.entries["area"]:
        known(where, "feeder", a.feeder, feeders)
    for key in ("meter_asset", "metering_point"):
        for where, m in topo.entries[key]:
            known(where, "meter", m.meter, meters)

    by_meter: dict[str, list[tuple[str, MeteringPointSpec]]] = defaultdict(list)
    totals: dict[tuple[str, str], list[tuple[str, MeteringPointSpec]]] = defaultdict(list)
    for where, p in topo.entries["metering_point"]:
        if p.role == "feeder_head":
            known(where, "feeder", p.feeder, feeders)
        else:
            known(where, "area", p.area, areas)
            kind = areas[p.area][1].kind
            if p.role == "customer" and kind == "dedicated":
                raise ConfigError(
                    f"{where}: area {p.area} is dedicated (专变): its meter is its area_total"
                    " point, it has no customer points"
                )
        by_meter[p.meter].append((where, p))
        if p.role != "customer":
            totals[p.place].append((where, p))

    for points in by_meter.values():
        _no_overlap(points, lambda p: f"in {p.place[0]} {p.place[1]}", "meter")
    for points in totals.values():
        _no_overlap(points, lambda p: p.meter, f"{points[0][1].role} point")
    with_total = {p.area for p in topo["metering_point"] if p.role == "area_total"}
    for where, a in topo.entries["area"] if totals else []:
        if a.name not in with_total:
            raise ConfigError(f"{where}: area {a.name} has no area_total metering point")

    for where, r in topo.entries["replacement"]:
        known(where, "meter", r.old_meter, meters)
        known(where, "meter", r.new_meter, meters)
        _check_replacement(where, r, by_meter)


def _no_overlap(points: list[tuple[str, MeteringPointSpec]], what: Any, noun: str) -> None:
    ordered = sorted(points, key=lambda wp: wp[1].valid_from or _MIN)
    for (_, a), (where, b) in pairwise(ordered):
        if a.valid_to is None or b.valid_from is None or a.valid_to > b.valid_from:
            raise ConfigError(
                f"{where}: {noun} {what(a)} and {what(b)} from {_day(b.valid_from)}"
                if noun == "meter"
                else f"{where}: two {noun}s at once in {b.place[0]} {b.place[1]}:"
                f" {what(a)} and {what(b)} from {_day(b.valid_from)}"
            )


def _check_replacement(
    where: str, r: ReplacementSpec, by_meter: dict[str, list[tuple[str, MeteringPointSpec]]]
) -> None:
    """The old meter's placement ends at `at` and the new one's starts there, in the same
    place with the same role (checked, not derived: the ledger states both)."""
    old = [p for _, p in by_meter.get(r.old_meter, []) if p.valid_to == r.at]
    new = [p for _, p in by_meter.get(r.new_meter, []) if p.valid_from == r.at]
    at = r.at.isoformat()
    if not old:
        raise ConfigError(f"{where}: no metering point of {r.old_meter} ends at {at}")
    if not new:
        raise ConfigError(f"{where}: no metering point of {r.new_meter} starts at {at}")
    if (old[0].place, old[0].role) != (new[0].place, new[0].role):
        raise ConfigError(
            f"{where}: {r.new_meter} is placed as {new[0].role} in {' '.join(new[0].place)},"
            f" {r.old_meter} was {old[0].role} in {' '.join(old[0].place)}"
        )


# ---- the read interface analytics use -------------------------------------------------


@dataclass(frozen=True)
class Placement:
    device_id: int
    device: str
    role: str
    area_id: int | None
    area: str | None
    feeder_id: int
    feeder: str
    phase: str
    multiplier: float
    customer_class: str | None
    valid_from: datetime  # clipped to [start, end)
    valid_to: datetime


_PLACEMENTS = """
SELECT p.device_id, d.name, p.role, a.id, a.name, f.id, f.name, p.phase, p.multiplier,
       p.customer_class, greatest(p.valid_from, %(start)s),
       least(coalesce(p.valid_to, 'infinity'), %(end)s)
  FROM metering_points p
  JOIN devices d ON d.id = p.device_id
  LEFT JOIN areas a ON a.id = p.area_id
  JOIN feeders f ON f.id = coalesce(p.feeder_id, a.feeder_id)
 WHERE p.valid_from < %(end)s AND coalesce(p.valid_to, 'infinity') > %(start)s
 ORDER BY d.name, p.valid_from
"""


def placements_between(conn: psycopg.Connection, start: datetime, end: datetime) -> list[Placement]:
    """Metering points in force at some instant of [start, end), periods clipped to it."""
    rows = conn.execute(_PLACEMENTS, {"start": start, "end": end}).fetchall()
    return [Placement(*r) for r in rows]


@dataclass(frozen=True)
class Replacement:
    old_device_id: int
    old_device: str
    new_device_id: int
    new_device: str
    at: datetime
    quantity: str
    old_final: float
    new_first: float


def replacements_between(
    conn: psycopg.Connection, start: datetime, end: datetime
) -> list[Replacement]:
    """Meter replacements with `at` in [start, end), oldest first."""
    rows = conn.execute(
        "SELECT r.old_device_id, o.name, r.new_device_id, n.name, r.at, r.quantity,"
        " r.old_final, r.new_first FROM meter_replacements r"
        " JOIN devices o ON o.id = r.old_device_id JOIN devices n ON n.id = r.new_device_id"
        " WHERE r.at >= %s AND r.at < %s ORDER BY r.at, o.name",
        (start, end),
    ).fetchall()
    return [Replacement(*r) for r in rows]


@dataclass(frozen=True)
class Area:
    id: int
    name: str
    feeder_id: int
    feeder: str
    kind: str
    transformer_kva: float


@dataclass(frozen=True)
class Feeder:
    id: int
    name: str
    substation_id: int
    substation: str
    voltage_kv: float


def areas(conn: psycopg.Connection) -> list[Area]:
    rows = conn.execute(
        "SELECT a.id, a.name, f.id, f.name, a.kind, a.transformer_kva FROM areas a"
        " JOIN feeders f ON f.id = a.feeder_id ORDER BY a.name"
    ).fetchall()
    return [Area(*r) for r in rows]


def feeders(conn: psycopg.Connection) -> list[Feeder]:
    rows = conn.execute(
        "SELECT f.id, f.name, s.id, s.name, f.voltage_kv FROM feeders f"
        " JOIN substations s ON s.id = f.substation_id ORDER BY f.name"
    ).fetchall()
    return [Feeder(*r) for r in rows]
