"""Line loss (线损) per group (area or feeder), per period and per voltage level, pure numpy.

A group has one supply series (area total meter, feeder head meter) and members (customer
meters of an area; area total meters of a feeder's areas), all in primary kWh per interval:

    loss = supply − Σ members,   rate % = loss / supply × 100,
    coverage = (supply present + members present) / (supply expected + members expected).

A group-interval is not computable (不可算) when its supply is missing or ≤ 0 or its
coverage is below ``min_coverage``: loss and rate are then NaN, never a made-up rate; supply
and sales still hold the sums of what is present. A member that reports counts as expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Bands",
    "LossResult",
    "Status",
    "concat_results",
    "group_loss",
    "level_loss",
    "period_loss",
]


class Status(IntEnum):
    NOT_COMPUTABLE = 0  # 不可算
    NEGATIVE = 1  # 负损
    NORMAL = 2
    HIGH = 3  # 高损


@dataclass(frozen=True)
class Bands:
    """Status bands in percent: rate < negative_below → NEGATIVE, rate > high_above → HIGH,
    else NORMAL (a rate exactly on a boundary is NORMAL)."""

    negative_below: float = -1.0
    high_above: float = 10.0

    def __post_init__(self) -> None:
        if not self.negative_below <= self.high_above:
            raise ValueError(
                f"Bands: negative_below ({self.negative_below}) above high_above"
                f" ({self.high_above})"
            )


@dataclass(frozen=True)
class LossResult:
    """Arrays (G, T): energies in primary kWh, rate in %, status as Status values (int8);
    counts of present/expected meter-intervals (all: supply + members; and supply only)."""

    supply: NDArray[np.float64]
    sales: NDArray[np.float64]
    loss: NDArray[np.float64]
    rate: NDArray[np.float64]
    coverage: NDArray[np.float64]
    status: NDArray[np.int8]
    present: NDArray[np.int64]
    expected: NDArray[np.int64]
    supply_present: NDArray[np.int64]
    supply_expected: NDArray[np.int64]


def group_loss(
    supply: ArrayLike,
    members: ArrayLike,
    group_of: ArrayLike,
    expected: ArrayLike | None,
    *,
    min_coverage: float = 1.0,
    bands: Bands = Bands(),
    supply_expected: ArrayLike | None = None,
) -> LossResult:
    """Per-interval line loss of G groups over T intervals.

    ``supply`` (G, T); ``members`` (n, T); ``group_of`` (n,) or (n, T) int, the group of each
    member (per interval when it moves; −1: in none); ``expected`` (n, T) bool, whether each
    member-interval should have data (None: all); ``supply_expected`` (G, T) (None: all).
    A fixed ``group_of`` takes a sorted ``np.add.reduceat`` path, a varying one ``bincount``.
    """
    s = np.asarray(supply, dtype=np.float64)
    m = np.asarray(members, dtype=np.float64)
    g = np.asarray(group_of)
    if s.ndim != 2 or m.ndim != 2 or m.shape[1] != s.shape[1]:
        raise ValueError(
            f"group_loss: supply (G, T) and members (n, T) expected, got {s.shape}, {m.shape}"
        )
    n_groups, t = s.shape
    n = m.shape[0]
    if not np.issubdtype(g.dtype, np.integer) or g.shape not in ((n,), (n, t)):
        raise ValueError(f"group_loss: group_of must be int ({n},) or ({n}, {t}), got {g.shape}")
    if g.size and (g.min() < -1 or g.max() >= n_groups):
        raise ValueError(f"group_loss: group_of outside −1…{n_groups - 1}")
    exp = None if expected is None else np.asarray(expected, dtype=bool)
    if exp is not None and exp.shape != (n, t):
        raise ValueError(f"group_loss: expected must be ({n}, {t}), got {exp.shape}")
    if g.ndim == 2 and n and (g == g[:, :1]).all():
        g = g[:, 0]  # a mapping that does not move takes the fast path
    if g.ndim == 1:
        sales, mp, me = _sum_static(m, g, exp, n_groups)
    else:
        sales, mp, me = _sum_moving(m, g, exp, n_groups)
    s_present = ~np.isnan(s)
    if supply_expected is None:
        s_expected = np.ones_like(s_present)
    else:
        s_expected = np.asarray(supply_expected, dtype=bool)
        if s_expected.shape != s.shape:
            raise ValueError(f"group_loss: supply_expected must be {s.shape}")
    sp = s_present.astype(np.int64)
    se = (s_expected | s_present).astype(np.int64)
    return _classify(s, sales, sp + mp, se + me, sp, se, min_coverage, bands)


def period_loss(
    result: LossResult,
    period_of: ArrayLike,
    n_periods: int,
    *,
    min_coverage: float = 1.0,
    bands: Bands = Bands(),
) -> LossResult:
    """Per-interval results (G, T) reduced to (G, n_periods) by ``period_of`` (T,) int
    (−1: interval in no period): energies and counts summed, then classified as in
    :func:`group_loss`. A period with any expected supply interval missing is not
    computable (a partial supply total cannot be set against the sales)."""
    p = np.asarray(period_of)
    t = result.supply.shape[1]
    if p.shape != (t,) or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"period_loss: period_of must be int ({t},), got {p.shape}")
    if p.size and (p.min() < -1 or p.max() >= n_periods):
        raise ValueError(f"period_loss: period_of outside −1…{n_periods - 1}")
    onehot = np.zeros((t, n_periods))
    keep = p >= 0
    onehot[np.flatnonzero(keep), p[keep]] = 1.0
    supply = np.nan_to_num(result.supply) @ onehot
    sales = np.nan_to_num(result.sales) @ onehot

    def count(a: NDArray) -> NDArray[np.int64]:
        return np.rint(a @ onehot).astype(np.int64)

    sp, se = count(result.supply_present), count(result.supply_expected)
    supply[sp == 0] = np.nan
    out = _classify(
        supply, sales, count(result.present), count(result.expected), sp, se, min_coverage, bands
    )
    return _not_computable_where(out, sp < se)


def level_loss(
    result: LossResult,
    group_level: ArrayLike,
    n_levels: int,
    *,
    bands: Bands = Bands(),
) -> LossResult:
    """Per voltage level (分压): Σ loss / Σ supply over the level's groups (``group_level``
    (G,) int, −1: in no level, e.g. dedicated areas), coverage combined. A level with any
    not-computable group (or none at all) is NOT_COMPUTABLE with NaN loss and rate, its
    supply, sales and coverage still reported."""
    lv = np.asarray(group_level)
    n_groups = result.supply.shape[0]
    if lv.shape != (n_groups,) or not np.issubdtype(lv.dtype, np.integer):
        raise ValueError(f"level_loss: group_level must be int ({n_groups},), got {lv.shape}")
    if lv.size and (lv.min() < -1 or lv.max() >= n_levels):
        raise ValueError(f"level_loss: group_level outside −1…{n_levels - 1}")
    onehot = np.zeros((n_levels, n_groups))
    keep = lv >= 0
    onehot[lv[keep], np.flatnonzero(keep)] = 1.0

    def total(a: NDArray) -> NDArray:
        return onehot @ np.nan_to_num(a)

    def count(a: NDArray) -> NDArray[np.int64]:
        return np.rint(onehot @ a).astype(np.int64)

    bad = count((result.status == Status.NOT_COMPUTABLE).astype(np.float64))
    members = count(np.ones_like(result.supply))
    supply, sales = total(result.supply), total(result.sales)
    out = _classify(
        supply,
        sales,
        count(result.present),
        count(result.expected),
        count(result.supply_present),
        count(result.supply_expected),
        0.0,
        bands,
    )
    return _not_computable_where(out, (bad > 0) | (members == 0))


def concat_results(*results: LossResult) -> LossResult:
    """Results of several group sets stacked along G (e.g. feeders then areas, for
    :func:`level_loss`)."""
    fields = LossResult.__dataclass_fields__
    return LossResult(**{f: np.concatenate([getattr(r, f) for r in results]) for f in fields})


def _sum_static(
    m: NDArray, g: NDArray, exp: NDArray | None, n_groups: int
) -> tuple[NDArray, NDArray, NDArray]:
    """Σ, present and expected counts per group for a fixed mapping: members sorted by
    group, one np.add.reduceat over the raw values; only group-intervals whose sum came out
    NaN (a member missing) are summed again from their rows with the gaps left out."""
    t = m.shape[1]
    if g.size and np.any(g[1:] < g[:-1]):
        order = np.argsort(g, kind="stable")
        g, m = g[order], m[order]
        exp = None if exp is None else exp[order]
    first = int(np.searchsorted(g, 0))  # rows with group −1 come first and are left out
    g, m = g[first:], m[first:]
    exp = None if exp is None else exp[first:]
    sales = np.zeros((n_groups, t))
    size = np.bincount(g, minlength=n_groups)
    present = np.repeat(size[:, None], t, axis=1)
    expected = present.copy()
    if g.size == 0:
        return sales, present, expected
    used = np.flatnonzero(size)
    starts = np.concatenate([[0], np.cumsum(size[used])[:-1]])
    sales[used] = np.add.reduceat(m, starts, axis=0)
    if exp is not None:  # members expected but missing, or not expected at all, need counts
        odd_rows = np.flatnonzero(~exp.all(axis=1))
    else:
        odd_rows = np.empty(0, dtype=np.int64)
    bad_groups = np.union1d(np.flatnonzero(np.isnan(sales).any(axis=1)), g[odd_rows])
    if bad_groups.size:
        rows = np.flatnonzero(np.isin(g, bad_groups))
        sub = m[rows]
        ok = ~np.isnan(sub)
        e = np.ones_like(ok) if exp is None else (exp[rows] | ok)
        sub_g = np.searchsorted(bad_groups, g[rows])
        sub_size = np.bincount(sub_g, minlength=bad_groups.size)
        sub_starts = np.concatenate([[0], np.cumsum(sub_size)[:-1]])
        sales[bad_groups] = np.add.reduceat(np.where(ok, sub, 0.0), sub_starts, axis=0)
        present[bad_groups] = np.add.reduceat(ok.astype(np.int64), sub_starts, axis=0)
        expected[bad_groups] = np.add.reduceat(e.astype(np.int64), sub_starts, axis=0)
    return sales, present, expected


def _sum_moving(
    m: NDArray, g: NDArray, exp: NDArray | None, n_groups: int
) -> tuple[NDArray, NDArray, NDArray]:
    """The same for a mapping that changes per interval: bincount over group·T + t."""
    t = m.shape[1]
    bins = n_groups * t
    flat = np.where(g >= 0, g * t + np.arange(t), bins).ravel()
    ok = ~np.isnan(m)
    e = np.ones_like(ok) if exp is None else (exp | ok)

    def tally(w: NDArray) -> NDArray:
        return np.bincount(flat, weights=w.ravel(), minlength=bins + 1)[:bins].reshape(-1, t)

    sales = tally(np.where(ok, m, 0.0))
    present = np.rint(tally(ok.astype(np.float64))).astype(np.int64)
    expected = np.rint(tally(e.astype(np.float64))).astype(np.int64)
    return sales, present, expected


def _classify(
    supply: NDArray,
    sales: NDArray,
    present: NDArray,
    expected: NDArray,
    supply_present: NDArray,
    supply_expected: NDArray,
    min_coverage: float,
    bands: Bands,
) -> LossResult:
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = np.where(expected > 0, present / np.maximum(expected, 1), np.nan)
        computable = (supply_present > 0) & (supply > 0) & (coverage >= min_coverage)
        loss = np.where(computable, supply - sales, np.nan)
        rate = loss / supply * 100.0
    status = np.full(supply.shape, Status.NORMAL, dtype=np.int8)
    status[rate < bands.negative_below] = Status.NEGATIVE
    status[rate > bands.high_above] = Status.HIGH
    status[~computable] = Status.NOT_COMPUTABLE
    return LossResult(
        supply=supply,
        sales=sales,
        loss=loss,
        rate=rate,
        coverage=coverage,
        status=status,
        present=present,
        expected=expected,
        supply_present=supply_present,
        supply_expected=supply_expected,
    )


def _not_computable_where(r: LossResult, mask: NDArray) -> LossResult:
    loss, rate, status = r.loss.copy(), r.rate.copy(), r.status.copy()
    loss[mask] = np.nan
    rate[mask] = np.nan
    status[mask] = Status.NOT_COMPUTABLE
    return LossResult(
        supply=r.supply,
        sales=r.sales,
        loss=loss,
        rate=rate,
        coverage=r.coverage,
        status=status,
        present=r.present,
        expected=r.expected,
        supply_present=r.supply_present,
        supply_expected=r.supply_expected,
    )
