"""Power-quality ground truth for the simulated world: voltage events with a known duration
and one-minute voltage monitors (电压监测仪) at chosen meters.

* `VoltageEvent(area, start, minutes, pu)`: the area's LV bus voltage times `pu` for
  `minutes` from `start` (a sag below 1, a swell above). `apply_events` scales the meters'
  15-min voltages (``truth.voltage``) of the intervals an event covers; events on the meters'
  grid must cover whole 15-min intervals (a partial interval would make the 15-min value a
  mix, whose truth is no longer a duration).
* `monitor_minutes(world, meter, events)`: a monitor beside `meter`: each minute the meter's
  15-min voltage of that interval, times the `pu` of any event covering the minute (events at
  minute resolution, any duration). Rounded to 0.1 V like the monitor's registers.

With events far outside the limits (e.g. pu 0.85 or 1.15) and a background inside them, the
time outside the limits is the events' duration by construction, not by counting samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from simulators.world.spec import STEP
from simulators.world.world import World


@dataclass(frozen=True)
class VoltageEvent:
    area: str
    start: datetime
    minutes: int
    pu: float

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.minutes <= 0 or self.pu <= 0:
            raise ValueError(f"voltage event in {self.area}: aware start, minutes > 0, pu > 0")

    @property
    def t0(self) -> int:
        return int(self.start.timestamp())

    @property
    def t1(self) -> int:
        return self.t0 + 60 * self.minutes


def _meters_of(world: World, area: str) -> np.ndarray:
    g = world.grid
    if area not in g.areas:
        raise ValueError(f"voltage event: no area {area!r} in the world")
    return np.flatnonzero((g.meter_area == g.areas.index(area)) & (g.role != "feeder_head"))


def apply_events(world: World, events: list[VoltageEvent]) -> np.ndarray:
    """Scale the affected meters' 15-min voltages in the world's truth (what they measure);
    returns the voltages as they were before (for `monitor_minutes`)."""
    t = world.truth
    before = t.voltage.copy()
    starts = t.boundaries[:-1]
    for e in events:
        if e.t0 % STEP or e.t1 % STEP:
            raise ValueError(f"voltage event in {e.area}: meters need whole 15-min intervals")
        cols = (starts >= e.t0) & (starts < e.t1)
        rows = _meters_of(world, e.area)
        t.voltage[np.ix_(rows, cols)] = np.round(t.voltage[np.ix_(rows, cols)] * e.pu, 1)
    return before


def monitor_minutes(
    world: World, meter: str, events: list[VoltageEvent], base: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(unix seconds (M,), volts (M,)) of a monitor beside `meter`, one per minute of the
    world's span; `base`: the meters' voltages before the events (what `apply_events`
    returned), default the truth's (no events applied to the meters)."""
    g, t = world.grid, world.truth
    i = g.index(meter)
    minutes = np.arange(int(t.boundaries[0]), int(t.boundaries[-1]), 60, dtype=np.int64)
    v = np.repeat((t.voltage if base is None else base)[i], STEP // 60).astype(float)
    area = g.areas[g.meter_area[i]] if g.meter_area[i] >= 0 else None
    for e in events:
        if e.area == area:
            v[(minutes >= e.t0) & (minutes < e.t1)] *= e.pu
    return minutes, np.round(v, 1)
