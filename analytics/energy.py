"""Interval energy from cumulative registers, in pure numpy.

Time axis: T intervals of ``step`` seconds from ``start`` (Unix seconds, UTC); a register is
read at the T+1 *boundaries* ``start + k·step``. Missing is NaN, never 0.

* :func:`align_registers` puts long-form readings on the boundaries (exact hit, else linear
  interpolation between the nearest readings on either side when both are close enough).
* :func:`interval_energy` turns boundary registers into per-interval primary energy, telling a
  rollover (the register wrapped at its modulus) from a reset and from an implausible jump.
* :func:`pin_replacement` / :func:`pin_replacements` make a meter replacement (换表) exact:
  the old meter stops at its final reading, the new one starts from its first.
* :func:`daily_energy` does the same as :func:`interval_energy` on daily frozen registers.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Flag",
    "align_registers",
    "daily_energy",
    "interval_energy",
    "pin_replacement",
    "pin_replacements",
]


class Flag(IntEnum):
    """Why an interval's energy is what it is (int8 in the flags array)."""

    OK = 0
    GAP = 1  # a register at either boundary is missing
    ROLLOVER = 2  # the register wrapped at its modulus; energy = d + modulus
    RESET = 3  # the register went back without a plausible wrap; energy unknown
    IMPLAUSIBLE = 4  # advanced more than max_step; energy unknown
    OUT_OF_SERVICE = 5  # no multiplier in force (meter not placed for this interval)


def align_registers(
    meter_idx: ArrayLike,
    ts: ArrayLike,
    value: ArrayLike,
    n_meters: int,
    start: int,
    step: int,
    n_points: int,
    tolerance: int,
) -> NDArray[np.float64]:
    """Register values (n_meters, n_points) at the boundaries ``start + k·step``.

    A reading exactly on a boundary is taken as is; otherwise the value is interpolated
    linearly between the meter's nearest readings before and after, when both are within
    ``tolerance`` seconds of the boundary; else NaN. A NaN reading counts as no reading.
    Two different values for one meter at one instant are an error (not silently picked).
    """
    m = np.asarray(meter_idx, dtype=np.int64).ravel()
    t = np.asarray(ts, dtype=np.int64).ravel()
    v = np.asarray(value, dtype=np.float64).ravel()
    if not (m.shape == t.shape == v.shape):
        raise ValueError(
            f"align_registers: meter_idx, ts and value differ in length"
            f" ({m.size}, {t.size}, {v.size})"
        )
    if step <= 0 or n_points < 0 or tolerance < 0 or n_meters < 0:
        raise ValueError(
            f"align_registers: need step > 0, n_points, n_meters, tolerance ≥ 0"
            f" (got step={step}, n_points={n_points}, n_meters={n_meters},"
            f" tolerance={tolerance})"
        )
    if m.size and (m.min() < 0 or m.max() >= n_meters):
        raise ValueError(
            f"align_registers: meter_idx outside 0…{n_meters - 1} (got {m.min()}…{m.max()})"
        )
    out = np.full((n_meters, n_points), np.nan)
    keep = ~np.isnan(v)
    m, t, v = m[keep], t[keep], v[keep]
    if m.size == 0 or n_points == 0:
        return out
    # one sortable key per (meter, instant): meter·span + (ts − lo)
    lo = min(int(t.min()), start)
    hi = max(int(t.max()), start + (n_points - 1) * step)
    span = hi - lo + 1
    if n_meters * span >= 2**62:
        raise ValueError("align_registers: time range × meters too large for int64 keys")
    key = m * span + (t - lo)
    order = np.argsort(key, kind="stable")
    key, m, t, v = key[order], m[order], t[order], v[order]
    dup = key[1:] == key[:-1]
    if np.any(dup & (v[1:] != v[:-1])):
        i = int(np.flatnonzero(dup & (v[1:] != v[:-1]))[0])
        raise ValueError(
            f"align_registers: meter index {m[i]} has two values at ts {t[i]}"
            f" ({v[i]!r} and {v[i + 1]!r})"
        )
    bt = start + step * np.arange(n_points, dtype=np.int64)  # boundary instants
    bm = np.repeat(np.arange(n_meters, dtype=np.int64), n_points)
    bkey = bm * span + np.tile(bt - lo, n_meters)
    i = np.searchsorted(key, bkey, side="left")  # first reading at or after the boundary
    n = key.size
    ic = np.minimum(i, n - 1)
    exact = (i < n) & (key[ic] == bkey)
    prev = np.maximum(i - 1, 0)
    has_prev = (i > 0) & (m[prev] == bm)
    has_next = (i < n) & (m[ic] == bm)
    bflat = np.tile(bt, n_meters)
    near = (
        has_prev & has_next & (bflat - t[prev] <= tolerance) & (t[ic] - bflat <= tolerance) & ~exact
    )
    res = np.full(bkey.size, np.nan)
    res[exact] = v[ic[exact]]
    p, q = prev[near], ic[near]
    w = (bflat[near] - t[p]) / (t[q] - t[p])
    res[near] = v[p] + w * (v[q] - v[p])
    return res.reshape(n_meters, n_points)


def interval_energy(
    registers: ArrayLike,
    multiplier: ArrayLike,
    modulus: ArrayLike,
    max_step: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """Per-interval primary energy (n, T) and flags (n, T) from registers (n, T+1).

    ``multiplier`` is (n,) or (n, T): the multiplier in force per interval, so a change
    mid-period applies from its interval on; NaN there means out of service. ``modulus``
    (n,) is the register's range (a 999999.99 register wraps at 1,000,000.00; inf: never),
    ``max_step`` (n,) the largest plausible advance per interval in secondary units.
    d = R[k+1] − R[k]: d < 0 with d + modulus ≤ max_step is a rollover (energy d + modulus);
    any other d < 0 a reset, d > max_step implausible, a NaN end a gap — all NaN energy.
    """
    r = np.asarray(registers, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 1:
        raise ValueError(f"interval_energy: registers must be (n, T+1), got shape {r.shape}")
    n, t1 = r.shape
    t = t1 - 1
    mult = _per_interval(multiplier, n, t, "multiplier")
    mod = _per_meter(modulus, n, "modulus")
    cap = _per_meter(max_step, n, "max_step")
    if np.any(mod <= 0) or np.any(cap < 0):
        raise ValueError("interval_energy: modulus must be > 0 and max_step ≥ 0")
    d = r[:, 1:] - r[:, :-1]
    gap = np.isnan(d)
    neg = d < 0
    wrapped = d + mod[:, None]
    rollover = neg & (wrapped <= cap[:, None]) & (wrapped >= 0)
    reset = neg & ~rollover
    implausible = d > cap[:, None]
    d = np.where(rollover, wrapped, d)
    d[reset | implausible] = np.nan
    flags = np.zeros((n, t), dtype=np.int8)
    flags[rollover] = Flag.ROLLOVER
    flags[reset] = Flag.RESET
    flags[implausible] = Flag.IMPLAUSIBLE
    flags[gap] = Flag.GAP
    off = np.isnan(mult)
    flags[off] = Flag.OUT_OF_SERVICE
    return d * mult, flags


def daily_energy(
    frozen: ArrayLike,
    multiplier: ArrayLike,
    modulus: ArrayLike,
    max_step: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """Daily primary energy (n, D) and flags from daily frozen registers (n, D+1) read at
    the D+1 local midnights; ``max_step`` is the largest plausible advance per *day*."""
    return interval_energy(frozen, multiplier, modulus, max_step)


def pin_replacement(
    old: ArrayLike,
    new: ArrayLike,
    boundaries: ArrayLike,
    at: int,
    old_final: float,
    new_first: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Registers (T+1,) of the old and the new meter pinned around a replacement at ``at``.

    old' = old before ``at``, old_final from ``at`` on; new' = new_first up to and including
    ``at``, new after. Each with its own multiplier and both in the metering point's group,
    the interval holding ``at`` then gets (old_final − old[k]) + (new[k+1] − new_first):
    exact, neither a rollover nor lost energy.
    """
    b = np.asarray(boundaries, dtype=np.int64)
    o = np.asarray(old, dtype=np.float64)
    w = np.asarray(new, dtype=np.float64)
    if not (o.shape == w.shape == b.shape) or b.ndim != 1:
        raise ValueError(
            f"pin_replacement: old, new and boundaries must be (T+1,) alike,"
            f" got {o.shape}, {w.shape}, {b.shape}"
        )
    return np.where(b < at, o, old_final), np.where(b <= at, new_first, w)


def pin_replacements(
    registers: ArrayLike,
    boundaries: ArrayLike,
    old_idx: ArrayLike,
    new_idx: ArrayLike,
    at: ArrayLike,
    old_final: ArrayLike,
    new_first: ArrayLike,
) -> NDArray[np.float64]:
    """:func:`pin_replacement` for many replacements at once on registers (n, T+1); returns
    a copy. A meter may be the new one of one replacement and the old one of a later one
    (a chain), but old (and new) meters must each appear once."""
    r = np.array(registers, dtype=np.float64, copy=True)
    b = np.asarray(boundaries, dtype=np.int64)
    oi = np.asarray(old_idx, dtype=np.int64)
    ni = np.asarray(new_idx, dtype=np.int64)
    when = np.asarray(at, dtype=np.int64)[:, None]
    fin = np.asarray(old_final, dtype=np.float64)[:, None]
    first = np.asarray(new_first, dtype=np.float64)[:, None]
    if np.unique(oi).size != oi.size or np.unique(ni).size != ni.size:
        raise ValueError("pin_replacements: a meter is the old (or new) one of two replacements")
    if r.ndim != 2 or b.shape != (r.shape[1],):
        raise ValueError(
            f"pin_replacements: registers (n, T+1) and boundaries (T+1,) expected,"
            f" got {r.shape} and {b.shape}"
        )
    r[ni] = np.where(b[None, :] <= when, first, r[ni])
    r[oi] = np.where(b[None, :] >= when, fin, r[oi])
    return r


def _per_meter(a: ArrayLike, n: int, name: str) -> NDArray[np.float64]:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 0:
        return np.full(n, float(x))
    if x.shape != (n,):
        raise ValueError(f"interval_energy: {name} must be ({n},), got shape {x.shape}")
    return x


def _per_interval(a: ArrayLike, n: int, t: int, name: str) -> NDArray[np.float64]:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim <= 1:
        return _per_meter(x, n, name)[:, None] * np.ones((1, t))
    if x.shape != (n, t):
        raise ValueError(f"interval_energy: {name} must be ({n},) or ({n}, {t}), got {x.shape}")
    return x
