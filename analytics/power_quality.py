"""Power quality (电能质量), pure numpy: voltage qualification rate (电压合格率), the composite
rate over monitoring classes A/B/C/D, three-phase unbalance and EN 50160-style weekly
compliance. Arrays in, arrays out; missing samples are NaN, never 0.

Formulas (docs/analytics.md, "Power quality"):

* deviation % = (V / V_nominal − 1) × 100, V_nominal the phase voltage the meter should see;
* a sample is over when its deviation > upper %, under when < lower % (the limits themselves
  are qualified: "不超过"); each present sample stands for `step` seconds;
* rate % = (1 − (over + under) / monitored) × 100 over a period; missing time is left out of
  `monitored` and reported beside it; no monitored time: rate NaN;
* composite % = Σ_c w_c · rate_c / Σ_c w_c over the classes c with monitored time, rate_c the
  class's time-weighted rate (Σ out-of-limit time / Σ monitored time of its monitors);
* unbalance % = |V₂| / |V₁| × 100 (symmetrical components) where the angles are known, else
  max_i |V_i − mean| / mean × 100;
* weekly compliance: the 10-min means of a week (a mean only of a complete 10 minutes), the
  share of them within the band; compliant when share ≥ 95 % and every mean within the wider
  band (EN 50160: ±10 % for 95 %, +10 %/−15 % for all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("A", "B", "C", "D")
_EPS = 1e-9  # relative: a voltage equal to a limit up to float noise is on the limit


@dataclass(frozen=True)
class Qualification:
    """Per row and period (n, P); times in seconds."""

    monitored: np.ndarray  # present samples × step
    missing: np.ndarray  # expected − present samples, × step
    over: np.ndarray
    under: np.ndarray
    rate: np.ndarray  # percent; NaN where nothing was monitored
    max_v: np.ndarray  # NaN where nothing was monitored
    min_v: np.ndarray


def limits_for(system_nominal: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper %, lower %) per row (n,) from `table` rows (system nominal V, upper %, lower %):
    the row of the largest nominal ≤ the system's (35 kV and 110 kV share the 35 kV row).
    A system below every row is an error, not a guess."""
    t = np.asarray(table, dtype=float)
    t = t[np.argsort(t[:, 0])]
    sys_v = np.asarray(system_nominal, dtype=float)
    i = np.searchsorted(t[:, 0], sys_v * (1 + _EPS), side="right") - 1
    if np.any(i < 0):
        low = sys_v[i < 0].min()
        raise ValueError(f"no voltage limits for a {low:g} V system (rows from {t[0, 0]:g} V)")
    return t[i, 1], t[i, 2]


def deviation_pct(voltage: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """(V / V_nominal − 1) × 100; `nominal` broadcast against `voltage` ((n,) → (n, 1))."""
    nominal = np.asarray(nominal, dtype=float)
    if nominal.ndim == 1:
        nominal = nominal[:, None]
    if np.any(nominal <= 0) or not np.all(np.isfinite(nominal)):
        raise ValueError("nominal voltage must be finite and > 0")
    return (np.asarray(voltage, dtype=float) / nominal - 1.0) * 100.0


def qualification(
    voltage: np.ndarray,
    nominal: np.ndarray,
    upper_pct: np.ndarray,
    lower_pct: np.ndarray,
    period_of: np.ndarray,
    n_periods: int,
    step: float,
    expected: np.ndarray | None = None,
) -> Qualification:
    """Voltage qualification per row (n) and period: `voltage` (n, T) samples (NaN missing),
    `nominal`/`upper_pct`/`lower_pct` (n,), `period_of` (T,) the period of each sample (−1:
    none), `step` seconds per sample, `expected` (n, T) bool: samples that should exist
    (default all)."""
    v = np.asarray(voltage, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"voltage must be (n, T), got shape {v.shape}")
    n, T = v.shape
    period_of = np.asarray(period_of, dtype=np.int64)
    if period_of.shape != (T,):
        raise ValueError(f"period_of must be ({T},), got {period_of.shape}")
    if np.any(period_of >= n_periods) or np.any(period_of < -1):
        raise ValueError("period_of holds an index outside [−1, n_periods)")
    upper, lower = np.asarray(upper_pct, float), np.asarray(lower_pct, float)
    if np.any(upper < lower):
        raise ValueError("an upper limit lies below its lower limit")
    exp = np.ones((n, T), bool) if expected is None else np.asarray(expected, bool)
    if exp.shape != (n, T):
        raise ValueError(f"expected must be ({n}, {T}), got {exp.shape}")
    nom = np.asarray(nominal, float)[:, None]
    hi = nom * (1 + upper[:, None] / 100) * (1 + _EPS)
    lo = nom * (1 + lower[:, None] / 100) * (1 - _EPS)
    present = ~np.isnan(v)
    with np.errstate(invalid="ignore"):
        over, under = present & (v > hi), present & (v < lo)
    monitored = _per_period(present, period_of, n_periods) * step
    missing = _per_period(exp & ~present, period_of, n_periods) * step
    o = _per_period(over, period_of, n_periods) * step
    u = _per_period(under, period_of, n_periods) * step
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(monitored > 0, (1 - (o + u) / monitored) * 100, np.nan)
    return Qualification(monitored, missing, o, u, rate, *_extremes(v, period_of, n_periods))


def _per_period(mask: np.ndarray, period_of: np.ndarray, n_periods: int) -> np.ndarray:
    """Count of True per row and period (n, P): a product with the one-hot (T, P) of the
    periods (−1 matches none)."""
    onehot = (period_of[:, None] == np.arange(n_periods)[None, :]).astype(np.float32)
    return (mask.astype(np.float32) @ onehot).astype(float)


def _extremes(v: np.ndarray, period_of: np.ndarray, n_periods: int):
    """Max and min per row and period, NaN where none is present (a loop per period)."""
    n = v.shape[0]
    vmax = np.full((n, n_periods), np.nan)
    vmin = np.full((n, n_periods), np.nan)
    for p in range(n_periods):
        cols = v[:, period_of == p]
        hi = np.fmax.reduce(cols, axis=1, initial=-np.inf)  # fmax: NaN loses
        lo = np.fmin.reduce(cols, axis=1, initial=np.inf)
        vmax[:, p] = np.where(np.isfinite(hi), hi, np.nan)
        vmin[:, p] = np.where(np.isfinite(lo), lo, np.nan)
    return vmax, vmin


def combine(q: Qualification, group_of: np.ndarray, n_groups: int) -> Qualification:
    """Sum rows into groups (an area, a class …): time-weighted, so the group's rate is
    1 − Σ out-of-limit time / Σ monitored time. `group_of` (n,) int, −1 = none."""
    group_of = np.asarray(group_of, dtype=np.int64)

    def total(a: np.ndarray, how=np.add, fill=0.0) -> np.ndarray:
        out = np.full((n_groups + 1, a.shape[1]), fill)
        how.at(out, group_of, a)
        return out[:n_groups]

    mon, o, u = total(q.monitored), total(q.over), total(q.under)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(mon > 0, (1 - (o + u) / mon) * 100, np.nan)
    vmax = total(np.nan_to_num(q.max_v, nan=-np.inf), np.fmax, -np.inf)
    vmin = total(np.nan_to_num(q.min_v, nan=np.inf), np.fmin, np.inf)
    return Qualification(
        mon,
        total(q.missing),
        o,
        u,
        rate,
        np.where(np.isfinite(vmax), vmax, np.nan),
        np.where(np.isfinite(vmin), vmin, np.nan),
    )


def composite_rate(
    q: Qualification, class_of: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, Qualification]:
    """The composite rate (P,) over monitors of classes A–D (`class_of` (n,) 0…3, −1 none;
    `weights` (4,)) and the per-class result (4, P). A class with no monitored time in a
    period is left out and the other weights renormalised; no class at all: NaN."""
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(CLASSES),) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("weights must be 4 non-negative numbers (A, B, C, D), not all 0")
    per_class = combine(q, class_of, len(CLASSES))
    w = np.where(np.isnan(per_class.rate), 0.0, weights[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.nansum(w * np.nan_to_num(per_class.rate), axis=0) / w.sum(axis=0)
    return np.where(w.sum(axis=0) > 0, rate, np.nan), per_class


# --- three-phase unbalance -------------------------------------------------------------

_A = np.exp(2j * np.pi / 3)


def unbalance_sequence(mag: np.ndarray, angle_deg: np.ndarray) -> np.ndarray:
    """|V₂| / |V₁| × 100 from phase magnitudes and angles (…, 3) (degrees): V₁ = (Va + a·Vb
    + a²·Vc)/3, V₂ = (Va + a²·Vb + a·Vc)/3, a = e^{j120°}. NaN where any phase is missing or
    V₁ = 0."""
    ph = np.asarray(mag, float) * np.exp(1j * np.deg2rad(np.asarray(angle_deg, float)))
    va, vb, vc = ph[..., 0], ph[..., 1], ph[..., 2]
    v1 = np.abs(va + _A * vb + _A**2 * vc) / 3
    v2 = np.abs(va + _A**2 * vb + _A * vc) / 3
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(v1 > 0, v2 / v1 * 100, np.nan)


def unbalance_deviation(mag: np.ndarray) -> np.ndarray:
    """max_i |V_i − mean| / mean × 100 over the phases (…, 3); NaN where any is missing or
    the mean is 0 (a current of zero in every phase: no unbalance to speak of)."""
    m = np.asarray(mag, float)
    mean = m.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, np.abs(m - mean[..., None]).max(axis=-1) / mean * 100, np.nan)


def unbalance(mag: np.ndarray, angle_deg: np.ndarray | None = None) -> np.ndarray:
    """The negative-sequence ratio where the angles are known (per sample: all three finite),
    the max-deviation formula otherwise."""
    dev = unbalance_deviation(mag)
    if angle_deg is None:
        return dev
    known = np.isfinite(np.asarray(angle_deg, float)).all(axis=-1)
    return np.where(known, unbalance_sequence(mag, np.nan_to_num(angle_deg)), dev)


# --- EN 50160-style weekly compliance ---------------------------------------------------


@dataclass(frozen=True)
class Compliance:
    """Per row and week (n, W)."""

    means: np.ndarray  # 10-min means counted
    incomplete: np.ndarray  # 10-min windows with a missing sample (not counted)
    within: np.ndarray  # means within the band
    share: np.ndarray  # % of the means within the band; NaN: none counted
    outside_wide: np.ndarray  # means beyond the wide band
    all_within: np.ndarray  # bool: every mean within the wide band
    compliant: np.ndarray  # bool: share ≥ the required share and all_within (and any means)


def ten_minute_means(values: np.ndarray, step: int) -> np.ndarray:
    """(n, T) samples of `step` seconds on a grid starting on a 10-minute boundary → (n,
    T·step/600) means, NaN where any sample of the 10 minutes is missing. A step longer than
    10 minutes (15-min curves) keeps its samples as they are: the nearest there is."""
    v = np.asarray(values, float)
    if step >= 600:
        return v
    if 600 % step:
        raise ValueError(f"a step of {step} s does not divide 10 minutes")
    k = 600 // step
    n, T = v.shape
    if T % k:
        raise ValueError(f"{T} samples of {step} s are not whole 10-minute windows")
    return v.reshape(n, T // k, k).mean(axis=2)  # any NaN → NaN


def weekly_compliance(
    means: np.ndarray,
    week_of: np.ndarray,
    n_weeks: int,
    band: tuple[np.ndarray, np.ndarray],
    wide: tuple[np.ndarray, np.ndarray],
    required_share: float = 95.0,
) -> Compliance:
    """`means` (n, M) 10-min values (NaN: incomplete window), `week_of` (M,) int (−1 none);
    `band` and `wide` (low, high) per row (n,) in the units of `means` (volts, or % for
    unbalance with low = −inf)."""
    m = np.asarray(means, float)
    lo, hi = (np.asarray(b, float)[:, None] for b in band)
    wlo, whi = (np.asarray(b, float)[:, None] for b in wide)
    present = ~np.isnan(m)
    with np.errstate(invalid="ignore"):
        inside = present & (m >= lo * (1 - _EPS)) & (m <= hi * (1 + _EPS))
        outside_wide = present & ((m < wlo * (1 - _EPS)) | (m > whi * (1 + _EPS)))
    week_of = np.asarray(week_of, np.int64)
    counted = _per_period(present, week_of, n_weeks)
    within = _per_period(inside, week_of, n_weeks)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counted > 0, within / counted * 100, np.nan)
    beyond = _per_period(outside_wide, week_of, n_weeks)
    compliant = (counted > 0) & (share >= required_share - 1e-9) & (beyond == 0)
    incomplete = _per_period(~present, week_of, n_weeks)
    return Compliance(counted, incomplete, within, share, beyond, beyond == 0, compliant)
