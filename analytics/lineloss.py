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
    "member_order",
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
    Members with a fixed group are summed per block of consecutive rows (see
    :func:`member_order`); those whose group varies, by ``np.bincount``.
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
    if g.ndim == 2:  # members that never move take the fast path, the others bincount
        fixed = (g == g[:, :1]).all(axis=1)
        moved = np.flatnonzero(~fixed)
        g = np.where(fixed, g[:, 0], -1) if n else np.zeros(0, dtype=np.int64)
    else:
        moved = np.empty(0, dtype=np.int64)
    sales, mp, me = _sum_static(m, g, exp, n_groups)
    if moved.size:
        group_of_moved = np.asarray(group_of)[moved]
        s2, p2, e2 = _sum_moving(
            m[moved], group_of_moved, None if exp is None else exp[moved], n_groups
        )
        sales, mp, me = sales + s2, mp + p2, me + e2
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
    """Σ, present and expected counts per group for a fixed mapping. Each group's rows must
    be consecutive (else they are sorted by group first, a copy): the raw values are summed
    per block; only groups whose sum came out NaN (a member missing) or with members not
    expected somewhere are summed again from their rows, gaps left out."""
    t = m.shape[1]
    change = np.flatnonzero(g[1:] != g[:-1]) + 1
    block_g = g[np.concatenate([[0], change])] if g.size else g
    placed = block_g[block_g >= 0]
    if np.unique(placed).size != placed.size:  # a group in pieces: sort (a gather)
        order = np.argsort(g, kind="stable")
        g, m = g[order], m[order]
        exp = None if exp is None else exp[order]
        change = np.flatnonzero(g[1:] != g[:-1]) + 1
        block_g = g[np.concatenate([[0], change])] if g.size else g
    sales = np.zeros((n_groups, t))
    size = np.bincount(g[g >= 0], minlength=n_groups)
    present = np.repeat(size[:, None], t, axis=1)
    expected = present.copy()
    if not (g >= 0).any():
        return sales, present, expected
    block_start = np.concatenate([[0], change])
    block_size = np.diff(np.concatenate([block_start, [g.size]]))
    sums = _sum_sorted(m, block_size, block_start)
    real = block_g >= 0  # blocks of members in no group (−1) are summed and left out
    sales[block_g[real]] = sums[real]
    if exp is not None and exp.all():
        exp = None  # all expected: the same as none given
    if exp is not None:  # members not expected somewhere need counts
        odd_rows = np.flatnonzero(~exp.all(axis=1))
    else:
        odd_rows = np.empty(0, dtype=np.int64)
    bad_groups = np.union1d(np.flatnonzero(np.isnan(sales).any(axis=1)), g[odd_rows])
    bad_groups = bad_groups[bad_groups >= 0]
    if bad_groups.size:  # their rows again, gaps as 0, with counts (still consecutive)
        rows = np.flatnonzero(np.isin(g, bad_groups))
        whole = rows.size == g.size
        sub, sub_g = (m, g) if whole else (m[rows], g[rows])
        ok = ~np.isnan(sub)
        cut = np.concatenate([[0], np.flatnonzero(sub_g[1:] != sub_g[:-1]) + 1])
        blocks = np.diff(np.concatenate([cut, [sub_g.size]]))
        sales[sub_g[cut]] = _sum_sorted(sub, blocks, cut, where=ok)
        present[sub_g[cut]] = _sum_sorted(ok, blocks, cut)
        if exp is not None:
            e = (exp if whole else exp[rows]) | ok
            expected[sub_g[cut]] = _sum_sorted(e, blocks, cut)
    return sales, present, expected


def _sum_sorted(
    m: NDArray, sizes: NDArray, starts: NDArray, where: NDArray | None = None
) -> NDArray:
    """Row sums per block of consecutive rows (block sizes > 0), of the rows' values where
    ``where`` (a bool array is counted: sum of its True). Runs of blocks of one size are
    summed as a (blocks, size, T) reshape at the speed of a plain sum; many short runs fall
    back to np.add.reduceat, which pays a ufunc call per row (≈3× slower for T = 96).
    Members ordered by (area size, area) — see :func:`member_order` — give few runs."""
    counting = m.dtype == np.bool_
    if counting:  # bytes summed into uint32: a quarter of the traffic of int64
        m, dtype = m.view(np.uint8), np.uint32
    else:
        dtype = np.float64
    edge = np.flatnonzero(np.diff(sizes)) + 1
    run_start = np.concatenate([[0], edge])
    if run_start.size * 64 > m.shape[0]:  # a reshape per run costs about 64 rows' calls
        x = m if where is None else np.where(where, m, 0)
        return np.add.reduceat(x, starts, axis=0, dtype=dtype)
    run_end = np.concatenate([edge, [sizes.size]])
    out = np.empty((sizes.size, m.shape[1]), dtype=dtype)
    for a, b in zip(run_start, run_end, strict=True):  # a loop per run of equal-size groups
        k, size, row = b - a, int(sizes[a]), int(starts[a])
        block = m[row : row + k * size].reshape(k, size, -1)
        mask = None if where is None else where[row : row + k * size].reshape(k, size, -1)
        out[a:b] = block.sum(axis=1, dtype=dtype, where=True if mask is None else mask)
    return out


def member_order(group_of: ArrayLike) -> NDArray[np.int64]:
    """The order of members (by their fixed group) that :func:`group_loss` sums fastest: by
    group size, then group. A loader that builds its arrays in this order gets the
    reshape path (≈ a plain sum) instead of reduceat."""
    g = np.asarray(group_of)
    size = np.bincount(g[g >= 0]) if (g >= 0).any() else np.zeros(0, dtype=np.int64)
    key = np.where(g >= 0, size[np.maximum(g, 0)] if size.size else 0, -1)
    return np.lexsort((g, key)).astype(np.int64)


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
