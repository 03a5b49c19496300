"""Meter-to-area check (户变关系) by voltage correlation, pure numpy.

Meters on one transformer see its LV voltage, which moves with the area's own load; areas on
one feeder also share the MV voltage. So each series is first differenced (removing level
and slow drift) and the component common to all areas (the mean of the references' steps)
is taken out; then each meter's steps are correlated with every area reference's steps, on
the intervals where both are present. A meter is flagged when a candidate area other than
its assigned one correlates better by more than ``margin``, with enough overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MappingResult", "check_meter_areas"]


@dataclass(frozen=True)
class MappingResult:
    """Per meter (n,): correlation with its own area, the best other candidate area (−1:
    none) and its correlation, the overlaps (intervals used), flagged; corr (n, A)."""

    own_corr: NDArray[np.float64]
    best_area: NDArray[np.int64]
    best_corr: NDArray[np.float64]
    own_overlap: NDArray[np.int64]
    best_overlap: NDArray[np.int64]
    flagged: NDArray[np.bool_]
    corr: NDArray[np.float64]


def check_meter_areas(
    voltage: ArrayLike,
    reference: ArrayLike,
    assigned: ArrayLike,
    candidates: ArrayLike | None = None,
    *,
    margin: float = 0.1,
    min_overlap: int = 96,
) -> MappingResult:
    """``voltage`` (n, T) meters' voltages, ``reference`` (A, T) each area's (e.g. its
    total meter's), ``assigned`` (n,) area index per the inventory (−1: none), ``candidates``
    (n, A) bool the areas each meter could belong to (None: all). Missing = NaN."""
    v = np.asarray(voltage, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    own = np.asarray(assigned)
    if v.ndim != 2 or ref.ndim != 2 or v.shape[1] != ref.shape[1]:
        raise ValueError(
            f"check_meter_areas: voltage (n, T) and reference (A, T) expected,"
            f" got {v.shape}, {ref.shape}"
        )
    n, a_n = v.shape[0], ref.shape[0]
    if own.shape != (n,) or not np.issubdtype(own.dtype, np.integer):
        raise ValueError(f"check_meter_areas: assigned must be int ({n},), got {own.shape}")
    if own.size and (own.min() < -1 or own.max() >= a_n):
        raise ValueError(f"check_meter_areas: assigned outside −1…{a_n - 1}")
    cand = np.ones((n, a_n), bool) if candidates is None else np.asarray(candidates, bool)
    if cand.shape != (n, a_n):
        raise ValueError(f"check_meter_areas: candidates must be ({n}, {a_n}), got {cand.shape}")
    dv, dr = np.diff(v, axis=1), np.diff(ref, axis=1)
    # the mean over the references present; none in an interval: nothing to remove
    present = np.sum(~np.isnan(dr), axis=0)
    total = np.nansum(dr, axis=0)
    common = np.divide(total, present, out=np.zeros_like(total), where=present > 0)
    dv, dr = dv - common, dr - common
    corr, overlap = _masked_corr(dv, dr)
    rows = np.arange(n)
    has_own = own >= 0
    own_i = np.where(has_own, own, 0)
    own_corr = np.where(has_own, corr[rows, own_i], np.nan)
    own_overlap = np.where(has_own, overlap[rows, own_i], 0)
    others = cand & (overlap >= min_overlap) & ~np.isnan(corr)
    others[rows[has_own], own[has_own]] = False
    masked = np.where(others, corr, -np.inf)
    best = np.argmax(masked, axis=1) if a_n else np.zeros(n, dtype=np.int64)
    any_other = others.any(axis=1)
    best_area = np.where(any_other, best, -1)
    best_corr = np.where(any_other, masked[rows, best] if a_n else np.nan, np.nan)
    best_overlap = np.where(any_other, overlap[rows, best] if a_n else 0, 0)
    own_known = has_own & (own_overlap >= min_overlap) & ~np.isnan(own_corr)
    with np.errstate(invalid="ignore"):
        flagged = any_other & own_known & (best_corr - own_corr > margin)
    return MappingResult(
        own_corr=own_corr,
        best_area=best_area.astype(np.int64),
        best_corr=best_corr,
        own_overlap=own_overlap.astype(np.int64),
        best_overlap=best_overlap.astype(np.int64),
        flagged=flagged,
        corr=corr,
    )


def _masked_corr(x: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
    """Pearson correlation of every row of x with every row of y over the columns where
    both are present, by matrix products of the masked sums; and the overlap counts."""
    mx, my = ~np.isnan(x), ~np.isnan(y)
    x0, y0 = np.where(mx, x, 0.0), np.where(my, y, 0.0)
    fx, fy = mx.astype(np.float64), my.astype(np.float64)
    cnt = fx @ fy.T
    sx, sy = x0 @ fy.T, fx @ y0.T
    sxx, syy = (x0 * x0) @ fy.T, fx @ (y0 * y0).T
    sxy = x0 @ y0.T
    with np.errstate(invalid="ignore", divide="ignore"):
        num = cnt * sxy - sx * sy
        den = np.sqrt(np.maximum(cnt * sxx - sx * sx, 0.0) * np.maximum(cnt * syy - sy * sy, 0.0))
        corr = np.where((cnt >= 3) & (den > 0), num / den, np.nan)
    return np.clip(corr, -1.0, 1.0), np.rint(cnt).astype(np.int64)
