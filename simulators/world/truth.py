"""The world's ground truth and the figures the accuracy work compares against.

Arrays are indexed by the world's meters (``grid.meters``), areas (``grid.areas``) and
feeders (``grid.feeders``); T intervals of 15 min from ``boundaries[0]``; registers at the
T + 1 boundaries. Energy in primary kWh unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from simulators.world.faults import Resolved, measured_energy

if TYPE_CHECKING:
    from simulators.world.world import Grid


@dataclass
class Truth:
    grid: Grid
    boundaries: np.ndarray  # (T+1,) int64 unix seconds
    energy: np.ndarray  # (n, T) true energy through each metering point (customers: consumption)
    seen: np.ndarray  # (n, T) what the meter's element registered (import + export), primary
    register_true: np.ndarray  # (n, T+1) an ideal register of `seen`, secondary kWh
    register: np.ndarray  # (n, T+1) what the meter shows on 1.8.0, secondary, `decimals`
    export: np.ndarray  # (n, T+1) what it shows on 2.8.0 (reverse wiring), secondary
    modulus: np.ndarray  # (n,) register modulus, inf: never wraps in this world
    voltage: np.ndarray  # (n, T) V at the meter (own phase; phase A of three-phase meters)
    voltage_flow: np.ndarray  # (n, T) the power flow's voltage (before noise and rounding)
    mv_voltage: np.ndarray  # (F, T) pu at the feeders' transformers
    power_factor: np.ndarray  # (n,)
    lv_loss: np.ndarray  # (A, T) service-line I²R, kWh
    fixed_loss: np.ndarray  # (A, T) meters' and concentrator's own consumption, kWh
    trafo_loss: np.ndarray  # (A, T) transformer P0 + load loss, kWh
    mv_loss: np.ndarray  # (F, T) feeder line I²R, kWh
    faults: list[Resolved]
    decimals: np.ndarray  # (n,) int: each register's last digit (2: 0.01 kWh)

    @cached_property
    def measured(self) -> np.ndarray:
        """(n, T) energy as the meters measured it (shown registers × true multipliers)."""
        return measured_energy(self.register, self.grid.multiplier, self.modulus, self.faults)

    def area_balance(self) -> dict[str, np.ndarray]:
        """Per area (A, T), as the meters measured, with the true multipliers and areas:
        supply (total meter), sales (Σ customers), loss = supply − sales (NaN for dedicated
        areas, which have no customers), technical = line I²R + fixed part (physics)."""
        g = self.grid
        A = len(g.areas)
        supply = np.zeros((A, self.measured.shape[1]))
        totals = g.role == "area_total"  # a replaced total meter and its successor: both count
        np.add.at(supply, g.meter_area[totals], self.measured[totals])
        sales = np.zeros_like(supply)
        customers = g.role == "customer"
        np.add.at(sales, g.meter_area[customers], self.measured[customers])
        loss = np.where(g.area_dedicated[:, None], np.nan, supply - sales)
        return {
            "supply": supply,
            "sales": sales,
            "loss": loss,
            "technical": self.lv_loss + self.fixed_loss,
        }

    def feeder_balance(self) -> dict[str, np.ndarray]:
        """Per feeder (F, T): supply (head meter), sales (Σ area totals incl. dedicated),
        loss, technical = transformer losses + MV line I²R."""
        g = self.grid
        F = len(g.feeders)
        heads = g.role == "feeder_head"
        supply = np.zeros((F, self.measured.shape[1]))
        np.add.at(supply, g.meter_feeder[heads], self.measured[heads])
        sales = np.zeros_like(supply)
        totals = g.role == "area_total"
        np.add.at(sales, g.meter_feeder[totals], self.measured[totals])
        technical = self.mv_loss.copy()
        np.add.at(technical, g.area_feeder, self.trafo_loss)
        return {"supply": supply, "sales": sales, "loss": supply - sales, "technical": technical}

    def real_area(self, meter: str) -> str | None:
        a = self.grid.meter_area[self.grid.index(meter)]
        return None if a < 0 else self.grid.areas[a]

    def fault_records(self) -> list[dict[str, Any]]:
        """Every injected fault: kind, meter, start (UTC, snapped to a boundary), parameters,
        the meter's real area, and its signature: per affected group (level area|feeder) the
        expected change of that group's loss per interval (T,) as an analysis using the
        *inventory* would see it, and its mean from the start on (kWh per interval)."""
        return [self._record(f) for f in self.faults]

    def _record(self, f: Resolved) -> dict[str, Any]:
        g = self.grid
        i, k = f.meter, f.k
        area = g.meter_area[i]
        after = np.arange(self.energy.shape[1]) >= k
        e_meas = self.measured[i]
        deltas: list[tuple[str, str, np.ndarray]] = []
        if f.kind == "wrong_area":
            moved = np.where(after, e_meas, 0.0)
            deltas = [("area", g.areas[area], moved), ("area", f.params["area"], -moved)]
        else:
            if f.kind == "wrong_multiplier":
                m = g.multiplier[i]
                dm = np.where(after, e_meas / m * (f.params["ct_ratio"] * g.pt[i] - m), 0.0)
            else:  # what the meter shows minus the energy that really went through it
                dm = e_meas - self.energy[i]
            feeder = g.feeders[g.meter_feeder[i]]
            if g.role[i] == "customer":
                deltas = [("area", g.areas[area], -dm)]
            elif g.role[i] == "area_total":
                deltas = [("area", g.areas[area], dm), ("feeder", feeder, -dm)]
                if g.area_dedicated[area]:
                    deltas = deltas[1:]
            else:
                deltas = [("feeder", feeder, dm)]
        params = dict(f.params)
        if f.kind == "replacement":  # what the 换表 record says: both registers at the swap
            new = g.index(params["new_meter"])
            params.update(old_final=self.register[i, k], new_first=self.register[new, k])
        return {
            "kind": f.kind,
            "meter": g.meters[i],
            "start": datetime.fromtimestamp(int(self.boundaries[k]), UTC),
            "params": params,
            "area": None if area < 0 else g.areas[area],
            "signature": [
                {
                    "level": level,
                    "group": group,
                    "delta_loss": d,
                    "mean_delta_kwh": float(np.nanmean(d[after])) if after.any() else 0.0,
                }
                for level, group, d in deltas
            ],
        }
