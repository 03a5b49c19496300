"""What a simulated world is made of: `WorldSpec` (sizes, seed, time span) and `Fault`s.

Names are deterministic so a spec can name the meter a fault hits before the world exists:
feeder ``f01`` with head meter ``f01-head``; public areas ``f01-a01`` with total meter
``f01-a01-total`` and customers ``f01-a01-c001`` …; the feeder's dedicated transformer
(专变) ``f01-d01`` whose only meter is ``f01-d01-total``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STEP = 900  # seconds: the 15-minute interval

FAULT_KINDS = {
    "theft": {"share"},  # share of the customer's load bypasses the meter
    "meter_error": {"pct"},  # the meter registers (1 + pct/100) × the energy
    "stopped": set(),  # the register stops advancing
    "wrong_multiplier": {"ct_ratio"},  # the inventory's CT ratio from `start` on
    "wrong_area": {"area"},  # the inventory places the meter in `area` from `start` on
    "reverse_wiring": set(),  # import register frozen, the energy counts on export 2.8.0
    "clock_drift": {"seconds_per_day"},  # the meter's clock gains this much per day
    "rollover": set(),  # the register wraps past 999999.99 in the interval at `start`
    "reset": set(),  # the register is set to 0 at `start`
    "replacement": set(),  # 换表: `<meter>-r` takes over the point at `start`, from 0
}
INVENTORY_FAULTS = {"wrong_multiplier", "wrong_area"}


@dataclass(frozen=True)
class Fault:
    kind: str
    meter: str
    start: datetime | None = None  # None: the world's start; snapped to the next boundary
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        missing = FAULT_KINDS[self.kind] - set(self.params)
        if missing:
            raise ValueError(f"fault {self.kind} on {self.meter}: missing {sorted(missing)}")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError(f"fault {self.kind} on {self.meter}: start must be timezone-aware")


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 1
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)  # aligned to 15 min
    days: int = 7
    feeders: int = 1
    areas_per_feeder: int = 3
    meters_per_area: int = 40
    share_single_phase: float = 0.8  # of the residential customers
    classes: dict[str, float] = field(
        default_factory=lambda: {"residential": 0.8, "commercial": 0.15, "industrial": 0.05}
    )
    faults: tuple[Fault, ...] = ()
    utc_offset_hours: float = 8.0  # local time of the load shapes (Asia/Shanghai)
    dedicated_per_feeder: int = 1
    service_length_km: tuple[float, float] = (0.03, 0.3)  # customers' service lines, uniform
    register_decimals: int = 2  # the registers' last digit: 2 = 0.01 kWh
    # DL/T 698.45 high-precision energy (高精度电能, BIN ×10⁴): the last digit of the meters a
    # concentrator reads — the public areas' customers and total meters, except `bus_areas`.
    # None: every meter keeps `register_decimals`. Set, the inventory must read the area
    # totals locally (area_totals="local") and put on a DL/T 645 bus only `bus_areas`.
    precise_decimals: int | None = None
    bus_areas: tuple[str, ...] = ()  # areas whose meters sit on a DL/T 645 bus (2 decimals)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or int(self.start.timestamp()) % STEP:
            raise ValueError("WorldSpec.start must be timezone-aware and on a 15-minute boundary")
        for name, v in (("days", self.days), ("feeders", self.feeders)):
            if v < 1:
                raise ValueError(f"WorldSpec.{name} must be ≥ 1, got {v}")
        if self.areas_per_feeder < 1 or self.meters_per_area < 1:
            raise ValueError("WorldSpec needs ≥ 1 area per feeder and ≥ 1 meter per area")
        lo, hi = self.service_length_km
        if not 0.0 <= lo <= hi:
            raise ValueError(
                f"WorldSpec.service_length_km {self.service_length_km}: need 0 ≤ low ≤ high"
            )
        for name in ("register_decimals", "precise_decimals"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 4:
                raise ValueError(f"WorldSpec.{name} {v} not in 0…4")
        if not 0.0 <= self.share_single_phase <= 1.0:
            raise ValueError(f"share_single_phase {self.share_single_phase} not in [0, 1]")
        unknown = set(self.classes) - {"residential", "commercial", "industrial"}
        if unknown or not self.classes or min(self.classes.values()) < 0:
            raise ValueError(f"WorldSpec.classes: unknown or negative entries {self.classes}")

    @property
    def t0(self) -> int:
        return int(self.start.timestamp())

    @property
    def intervals(self) -> int:
        return self.days * 96
