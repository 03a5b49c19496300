"""The data model every part of gridread speaks: readings, events and their quality flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntFlag
from typing import Any


class Quality(IntFlag):
    """Per-reading quality flags, stored as a smallint. 0 means a good, direct read."""

    GOOD = 0
    ESTIMATED = 1  # VEE filled it in; the value is not a meter read
    EDITED = 2  # a person changed it; the audit log says who and why
    SUSPECT = 4  # failed a validation rule; kept, flagged for review
    RE_READ = 8  # read back from the meter's history (补抄), not at the scheduled time
    CLOCK_SUSPECT = 16  # the device clock was off beyond the bound when this was read
    OVERFLOW = 32  # a register rolled over (e.g. 999999.99 → 0) between two reads


class Reading:
    """One value of one quantity of one device at one instant (UTC).

    A plain slotted class rather than a dataclass: collectors make millions of these, and
    the writer reads their fields as a tuple (`row`), which is the COPY row format.
    """

    __slots__ = ("device_id", "quality", "quantity", "ts", "value")

    def __init__(
        self, device_id: int, quantity: str, ts: datetime, value: float, quality: int = 0
    ) -> None:
        self.device_id = device_id
        self.quantity = quantity
        self.ts = ts
        self.value = value
        self.quality = quality

    @property
    def row(self) -> tuple[int, str, datetime, float, int]:
        return (self.device_id, self.quantity, self.ts, self.value, self.quality)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reading) and self.row == other.row

    def __hash__(self) -> int:
        return hash(self.row)

    def __repr__(self) -> str:
        return (
            f"Reading(device_id={self.device_id}, quantity={self.quantity!r}, "
            f"ts={self.ts.isoformat()}, value={self.value!r}, quality={Quality(self.quality)!r})"
        )


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at a device: power down/up, cover open, phase loss …"""

    device_id: int
    ts: datetime
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
