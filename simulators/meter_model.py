"""A three-phase meter whose values follow a smooth, known load curve: the ground truth.

Everything is a closed-form function of time, so any instant can be asked for without state:
voltages wander around nominal, the load swings on a daily-like cycle, the currents follow from
power, voltage and power factor, and the energy register is the exact integral of the power.
A test can therefore compare what gridread stored with what the meter "really" measured.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class MeterModel:
    nominal_voltage: float = 230.0  # phase voltage, V
    base_power_kw: float = 12.0  # mean three-phase active power
    swing: float = 0.5  # load swings ±50 % around the mean
    period_s: float = 3600.0  # one load cycle (an hour, so a demo shows movement)
    phase: float = 0.0  # where in the cycle the meter starts, radians
    power_factor: float = 0.95
    voltage_ripple: float = 3.0  # V
    energy_at_epoch_kwh: float = 1000.0  # register value at t = 0
    export_kwh: float = 0.0  # no generation behind this meter: the export register is constant
    epoch: float = 1_767_225_600.0  # 2026-01-01T00:00Z: where the load curve and registers start

    @classmethod
    def random(cls, rng: random.Random) -> MeterModel:
        return cls(
            base_power_kw=rng.uniform(2.0, 40.0),
            swing=rng.uniform(0.2, 0.7),
            period_s=rng.uniform(1800, 7200),
            phase=rng.uniform(0, 2 * math.pi),
            power_factor=rng.uniform(0.85, 0.99),
            voltage_ripple=rng.uniform(1.0, 6.0),
            energy_at_epoch_kwh=rng.uniform(100.0, 50_000.0),
        )

    def power_kw(self, t: float) -> float:
        t -= self.epoch
        return self.base_power_kw * (
            1 + self.swing * math.sin(2 * math.pi * t / self.period_s + self.phase)
        )

    def energy_kwh(self, t: float) -> float:
        """Exact ∫ power dt from 0 to t (hours), plus the register's value at 0."""
        t -= self.epoch
        w = 2 * math.pi / self.period_s
        integral_s = t + self.swing / w * (math.cos(self.phase) - math.cos(w * t + self.phase))
        return self.energy_at_epoch_kwh + self.base_power_kw * integral_s / 3600.0

    def voltages(self, t: float) -> tuple[float, float, float]:
        w = 2 * math.pi / 600.0  # a slower 10-minute wander
        return tuple(  # type: ignore[return-value]
            self.nominal_voltage + self.voltage_ripple * math.sin(w * t + self.phase + k * 2.1)
            for k in range(3)
        )

    def values(self, t: float) -> dict[str, float]:
        """Every quantity of the meter at time t (seconds since the Unix epoch), keyed by OBIS."""
        p = self.power_kw(t)
        va, vb, vc = self.voltages(t)
        per_phase_w = p * 1000 / 3
        pf = self.power_factor
        return {
            "32.7.0": va,
            "52.7.0": vb,
            "72.7.0": vc,
            "31.7.0": per_phase_w / (va * pf),
            "51.7.0": per_phase_w / (vb * pf),
            "71.7.0": per_phase_w / (vc * pf),
            "1.7.0": p,
            "13.7.0": pf,
            "14.7.0": 50.0 + 0.02 * math.sin(2 * math.pi * t / 97.0 + self.phase),
            "1.8.0": self.energy_kwh(t),
            "2.8.0": self.export_kwh,
        }
