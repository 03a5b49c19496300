"""An area's members and what each contributed over a window (the API's "contributions"):
the same path as the line-loss job (topology in force per interval, registers aligned and
pinned, interval energy), summed per member over the intervals it belonged to the area."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.energy import interval_energy
from analytics.store import ROLES, AnalyticsStore, Grid, Topology

AREA_TOTAL, CUSTOMER = ROLES.index("area_total"), ROLES.index("customer")


@dataclass(frozen=True)
class Contribution:
    meter: str
    role: str
    multiplier: float  # the last in force in the window
    energy: float | None  # primary kWh over the intervals present; None: none present
    intervals_present: int
    intervals_expected: int
    share_pct: float | None  # of the members' total energy (sales); area_total: None


def area_contributions(topo: Topology, energy: np.ndarray, area: int) -> list[Contribution]:
    """Per device that was the area's total meter or one of its customers in the window."""
    inside = (topo.area == area) & np.isin(topo.role, (AREA_TOTAL, CUSTOMER))
    rows = np.flatnonzero(inside.any(axis=1))
    e = np.where(inside, energy, np.nan)[rows]
    expected = (topo.expected & inside)[rows]
    present = (~np.isnan(e) & expected).sum(axis=1)
    total = np.nansum(np.where(expected, e, np.nan), axis=1)
    customer = (topo.role[rows] == CUSTOMER).any(axis=1)
    sales = total[customer & (present > 0)].sum()
    last = inside[rows].shape[1] - 1 - np.argmax(inside[rows][:, ::-1], axis=1)
    out = []
    for k, row in enumerate(rows):  # one per member, to build the response rows
        is_customer = bool(customer[k])
        has = int(present[k]) > 0
        out.append(
            Contribution(
                meter=topo.device_names[row],
                role="customer" if is_customer else "area_total",
                multiplier=float(topo.multiplier[row, last[k]]),
                energy=float(total[k]) if has else None,
                intervals_present=int(present[k]),
                intervals_expected=int(expected[k].sum()),
                share_pct=float(total[k] / sales * 100) if is_customer and has and sales else None,
            )
        )
    return out


def load_contributions(
    store: AnalyticsStore,
    area_name: str,
    start: int,
    end: int,
    *,
    step: int = 900,
    tolerance: int = 300,
    modulus: float = 1_000_000.0,
    max_step: float = 10_000.0,
) -> list[Contribution] | None:
    """The members of `area_name` over [start, end); None when there is no such area."""
    grid = Grid(start, step, (end - start) // step)
    topo = store.topology(grid, area=area_name)  # its points only: one area's load
    if area_name not in topo.area_names:
        return None
    n = len(topo.device_ids)
    regs = store.registers(topo, tolerance)
    energy, _ = interval_energy(regs, topo.multiplier, np.full(n, modulus), np.full(n, max_step))
    return area_contributions(topo, energy, topo.area_names.index(area_name))
