"""The service line's voltage drop against the registered energy (issue 10, theft): the drop
from the area's LV bus to a meter goes with the load that really flows, the register with
what the meter sees. A meter bypassed for a share s from some day on registers (1 − s) of
the load from then: its drop per registered kWh steps up by 1/(1 − s). Per meter, one
least squares per side of each split day (drop = a + b·energy), vectorised over meters ×
days; independent of the area's balance, so other faults in the area do not blur it."""

from __future__ import annotations

import numpy as np

from analytics.anomaly_base import AnomalyInput, Rule, RuleHits, _day_rule, _day_starts, _p, _pick


def _slope_split(x, y, day_of, min_days: float):
    """Slope b of y on x (with intercept) before and after each split day 1 … D−1, and z of
    b_after − b_before: (starts, z, b_before, b_after), (n, D − 1) each; z = 0 where a side
    has fewer than min_days × half a day of intervals or no spread of x."""
    starts = _day_starts(day_of)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    parts = (ok.astype(float), x, y, x * x, x * y, y * y)
    days = [np.add.reduceat(a, starts, axis=1) for a in parts]
    before = [np.cumsum(a, axis=1)[:, :-1] for a in days]
    after = [a.sum(axis=1, keepdims=True) - b for a, b in zip(days, before, strict=True)]
    min_k = min_days * 0.5 * np.median(np.diff(np.r_[starts, len(day_of)]))
    with np.errstate(invalid="ignore", divide="ignore"):
        (bb, vb, kb), (ba, va, ka) = (_fit(*side) for side in (before, after))
        z = (ba - bb) / np.sqrt(vb + va)
    z = np.where((kb >= min_k) & (ka >= min_k) & np.isfinite(z), z, 0.0)
    return starts, z, bb, ba


def _fit(k, sx, sy, sxx, sxy, syy):
    """Least squares slope, its variance and the count from the sums of one side."""
    cxx, cxy, cyy = sxx - sx * sx / k, sxy - sx * sy / k, syy - sy * sy / k
    b = cxy / cxx
    rss = np.maximum(cyy - b * cxy, 0.0)
    return b, rss / (k - 2) / cxx, k


def _voltage_drop_step(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    """The split day where the meter's drop per registered kWh rises most (z); hit when z ≥
    `min_z` and after / before ≥ `min_ratio` (a share s stolen gives 1/(1 − s): 1.25 for
    20 %). Needs the area's bus voltage; the meter's is the mean of its phases."""
    if inp.bus_voltage is None or inp.voltage is None or inp.energy.shape[1] < 2:
        return None
    known = np.isfinite(inp.voltage)
    with np.errstate(invalid="ignore", divide="ignore"):  # no phase known: NaN
        v = np.where(known, inp.voltage, 0.0).sum(axis=1) / known.sum(axis=1)
    drop = inp.bus_voltage - v
    starts, z, bb, ba = _slope_split(inp.energy, drop, inp.day_of, _p(rule, "min_days", 2))
    col = z.argmax(axis=1)
    zb, before, after = _pick(z, col), _pick(bb, col), _pick(ba, col)
    day = np.where(zb > 0, col + 1, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = after / before
        hit = (
            (day >= 0) & (zb >= _p(rule, "min_z", 6.0)) & (before > 0)
            & (ratio >= _p(rule, "min_ratio", 1.15))
        )  # fmt: skip
    return _day_rule(inp, rule, starts, day, hit, ratio, z=zb, before=before, after=after)
