"""Wrong multiplier (倍率) check, pure numpy: two signatures that name the suspect meter.

1. A step at a multiplier change. When the ledger changes a metering point's multiplier from
   m₀ to m₁ at interval k but the CT/PT in the field did not change, every interval from k on
   counts the meter's secondary energy Eˢ × m₁ instead of × m₀, so the area's loss moves by

       expected = sign · mean_{t ≥ k}(Eˢ_t) · (m₁ − m₀)   (sign −1 for a customer, +1 for the
                                                         area total, whose energy is the supply)

   If the change was real (the CT was swapped), the loss does not move. The observed jump is
   the mean loss over the `window` intervals after k minus the mean over those before, with
   its standard error from both sides' spread; flagged when it is distinguishable from 0
   (|expected| > z·se) and observed / expected lies within 1 ± `tolerance`.
2. An estimated meter factor far outside any accuracy class. A multiplier wrong over the whole
   window makes the meter-error estimate read (m_ledger / m_true − 1)·100 %: an identifiable
   error beyond `implausible_pct` (default 20 %, ten times a class 2 meter's limit) names the
   meter, with the multiplier the estimate implies: m_ledger / (1 + error/100).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MultiplierSteps", "implausible_factors", "multiplier_steps"]


@dataclass(frozen=True)
class MultiplierSteps:
    """One entry per multiplier change found (c,): the meter row, its area, the interval k
    from which the new multiplier counts, both multipliers, expected and observed jump of the
    area's loss (kWh per interval), its standard error, the ratio and the verdict."""

    meter: NDArray[np.int64]
    area: NDArray[np.int64]
    at: NDArray[np.int64]
    before: NDArray[np.float64]
    after: NDArray[np.float64]
    expected: NDArray[np.float64]
    observed: NDArray[np.float64]
    stderr: NDArray[np.float64]
    ratio: NDArray[np.float64]
    flagged: NDArray[np.bool_]


def multiplier_steps(
    loss: ArrayLike,
    secondary: ArrayLike,
    multiplier: ArrayLike,
    area_of: ArrayLike,
    sign: ArrayLike,
    *,
    window: int = 672,
    min_intervals: int = 96,
    tolerance: float = 0.5,
    confidence: float = 0.99,
) -> MultiplierSteps:
    """``loss`` (A, T) each area's loss per interval as the ledger computes it (NaN: not
    computable); ``secondary`` (n, T) each meter's register advance (secondary kWh, NaN:
    unknown); ``multiplier`` (n, T) the ledger's multiplier in force (NaN: not placed);
    ``area_of`` (n, T) the area row (−1: none); ``sign`` (n,) +1 for a supply meter, −1 for a
    member. A change counts only within one area, with ≥ `min_intervals` computable loss
    intervals on each side (of the `window` nearest)."""
    lo = np.asarray(loss, dtype=np.float64)
    e = np.asarray(secondary, dtype=np.float64)
    m = np.asarray(multiplier, dtype=np.float64)
    a = np.asarray(area_of, dtype=np.int64)
    s = np.asarray(sign, dtype=np.float64)
    if lo.ndim != 2 or e.ndim != 2 or m.shape != e.shape or a.shape != e.shape:
        raise ValueError(
            f"multiplier_steps: loss (A, T), secondary/multiplier/area_of (n, T) expected,"
            f" got {lo.shape}, {e.shape}, {m.shape}, {a.shape}"
        )
    if lo.shape[1] != e.shape[1] or s.shape != (e.shape[0],):
        raise ValueError(f"multiplier_steps: T or n disagree: {lo.shape}, {e.shape}, {s.shape}")
    # a change: both sides placed in the same area, multipliers differ
    prev, nxt = m[:, :-1], m[:, 1:]
    same_area = (a[:, :-1] == a[:, 1:]) & (a[:, 1:] >= 0)
    with np.errstate(invalid="ignore"):
        change = same_area & (prev != nxt) & ~np.isnan(prev) & ~np.isnan(nxt)
    rows, cols = np.nonzero(change)
    k = cols + 1
    T = e.shape[1]
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    out = {f: np.full(len(rows), np.nan) for f in ("expected", "observed", "stderr", "ratio")}
    flagged = np.zeros(len(rows), dtype=bool)
    area = a[rows, k] if len(rows) else np.zeros(0, dtype=np.int64)
    for c, (i, kk, g) in enumerate(zip(rows, k, area, strict=True)):  # one per change (few)
        hi = min(T, kk + window)
        before = lo[g, max(0, kk - window) : kk]
        after = lo[g, kk:hi]
        before, after = before[~np.isnan(before)], after[~np.isnan(after)]
        if min(before.size, after.size) < min_intervals:
            continue
        sec = e[i, kk:hi]
        expected = s[i] * np.nanmean(sec) * (m[i, kk] - m[i, kk - 1])
        observed = after.mean() - before.mean()
        se = float(np.sqrt(after.var(ddof=1) / after.size + before.var(ddof=1) / before.size))
        ratio = observed / expected if expected != 0 else np.nan
        out["expected"][c], out["observed"][c], out["stderr"][c] = expected, observed, se
        out["ratio"][c] = ratio
        flagged[c] = abs(expected) > z * se and abs(ratio - 1.0) <= tolerance
    return MultiplierSteps(
        meter=rows.astype(np.int64),
        area=area.astype(np.int64),
        at=k.astype(np.int64),
        before=m[rows, k - 1] if len(rows) else np.zeros(0),
        after=m[rows, k] if len(rows) else np.zeros(0),
        flagged=flagged,
        **out,
    )


def implausible_factors(
    error_pct: ArrayLike, multiplier: ArrayLike, *, implausible_pct: float = 20.0
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """(flagged (n,), implied multiplier (n,)): meters whose estimated error (NaN: not
    identifiable, never flagged) lies beyond ±`implausible_pct`, and the multiplier that
    would make them right, m / (1 + error/100)."""
    err = np.asarray(error_pct, dtype=np.float64)
    mult = np.asarray(multiplier, dtype=np.float64)
    if err.shape != mult.shape or err.ndim != 1:
        raise ValueError(
            f"implausible_factors: (n,) arrays expected, got {err.shape}, {mult.shape}"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        implied = mult / (1.0 + err / 100.0)
        flagged = np.abs(err) > implausible_pct
    return flagged, np.where(flagged, implied, np.nan)
