"""VEE (validation, estimation, editing) of 15-min and daily frozen registers, pure numpy.

Input: a meter's cumulative register at the T+1 boundaries of T intervals (the load profile,
secondary kWh, NaN = missing) with the ingest quality flags, and the daily frozen registers
at the D+1 day boundaries (``per_day`` intervals a day, boundary ``d·per_day`` of the profile
is the freeze instant of day boundary ``d``).

* :func:`validate_profile` marks what is wrong on each boundary and interval (:class:`Rule`
  bits) and decides which boundaries are bad (to estimate);
* :func:`analytics.vee_estimate.estimate_profile` fills the bad boundaries: linear for short
  gaps, the same-day-type profile for longer ones, scaled to the register delta when the
  register on both sides is known;
* :func:`validate_frozen` / :func:`analytics.vee_estimate.estimate_frozen` do the same for the
  daily frozen registers: the sum-check against the day's interval energy, the TOU registers
  summing to the total.

Every value comes out with a :class:`Method` (actual / estimated / edited) and the rules
that touched it; versions are the store's (``analytics/vee_store.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np
from numpy.typing import NDArray

from ingest.model import Quality

__all__ = [
    "DEFAULT_POLICY",
    "NOT_VALID",
    "Method",
    "ProfileCheck",
    "Rule",
    "VeePolicy",
    "unwrap",
    "validate_frozen",
    "validate_profile",
    "wrapped_diff",
]


class Method(IntEnum):
    """Where a validated value comes from."""

    ACTUAL = 0
    ESTIMATED = 1
    EDITED = 2


class Rule(IntFlag):
    """The rules that touched a value (int32 bits; stored as the list of names)."""

    NONE = 0
    GAP = 1  # no value
    SUSPECT = 2  # flagged SUSPECT at ingest (kept when nothing else is wrong with it)
    NEGATIVE = 4  # the register went back over this interval
    SPIKE = 8  # the register advanced more than the interval's plausible maximum
    SUM_CHECK = 16  # the day's interval energy disagrees with its frozen register delta
    TOU_SUM = 32  # the TOU registers do not sum to the total
    NOT_MONOTONIC = 64  # a frozen register below the previous day's
    FROM_FROZEN = 128  # a missing profile register taken from the frozen register there
    LINEAR = 256  # estimated: linear between the registers either side
    PROFILE = 512  # estimated: the same-day-type profile
    SCALED = 1024  # the estimate scaled to the register delta across the gap
    FROM_PROFILE = 2048  # a frozen register taken from the validated profile register
    TOU_REMAINDER = 4096  # a missing TOU register = total − the other three
    UNESTIMATED = 8192  # bad and could not be estimated: not validated
    ROLLOVER = 16384  # the register wrapped at its modulus over this interval (energy kept)

    def names(self) -> list[str]:
        return [r.name.lower() for r in Rule if r and r in self]  # type: ignore[union-attr]


# rules that leave a value unvalidated (billing reports it) until a person edits it
NOT_VALID = int(Rule.NEGATIVE | Rule.SPIKE | Rule.SUM_CHECK)
NOT_VALID |= int(Rule.NOT_MONOTONIC | Rule.UNESTIMATED)


@dataclass(frozen=True)
class VeePolicy:
    """Thresholds (settings ``vee_*``). Registers are in secondary kWh."""

    max_linear_gap: int = 4  # intervals: longer gaps are estimated from the profile
    sum_tolerance_kwh: float = 0.05  # sum-check: |Σ intervals − frozen delta| allowed
    tou_tolerance_kwh: float = 0.05  # |Σ TOU − total| allowed (each register rounds)
    max_linear_days: int = 3  # frozen registers: longest gap filled linearly


DEFAULT_POLICY = VeePolicy()


@dataclass(frozen=True)
class ProfileCheck:
    """:func:`validate_profile`'s verdict: rules per boundary (n, T+1) and per interval
    (n, T), and the boundaries to estimate (n, T+1)."""

    boundary_rules: NDArray[np.int32]
    interval_rules: NDArray[np.int32]
    bad: NDArray[np.bool_]


def unwrap(
    registers: NDArray[np.float64], modulus: NDArray[np.float64] | None, max_step: NDArray
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Registers (n, K) made continuous across rollovers, and where each wrap was seen.

    A register below the last one read before it, by no more than the modulus allows
    (``0 ≤ R + modulus − R_prev ≤ max_step × positions between``), wrapped (999999.99 →
    0.02); from there on the modulus is added. ``modulus`` (n,), inf or None: never wraps.
    """
    reg = np.asarray(registers, dtype=np.float64)
    n, k = reg.shape
    wrapped = np.zeros((n, k), dtype=bool)
    if modulus is None:
        return reg, wrapped
    mod = np.broadcast_to(np.asarray(modulus, dtype=np.float64).reshape(-1, 1), (n, 1))
    step = np.broadcast_to(np.asarray(max_step, dtype=np.float64).reshape(-1, 1), (n, 1))
    idx = np.broadcast_to(np.arange(k), (n, k))
    finite = np.isfinite(reg)
    last = np.maximum.accumulate(np.where(finite, idx, -1), axis=1)
    prev_idx = np.full((n, k), -1)
    prev_idx[:, 1:] = last[:, :-1]
    prev = reg[np.arange(n)[:, None], np.clip(prev_idx, 0, k - 1)]
    jump = reg + mod - prev
    with np.errstate(invalid="ignore"):
        wrapped = finite & (prev_idx >= 0) & np.isfinite(mod) & (reg < prev)
        wrapped &= (jump >= 0) & (jump <= step * (idx - prev_idx))
    offset = np.cumsum(wrapped, axis=1) * np.where(np.isfinite(mod), mod, 0.0)
    return reg + offset, wrapped


def wrapped_diff(x: NDArray[np.float64], modulus: NDArray[np.float64] | None) -> NDArray:
    """A difference of registers (n, …) reduced to (−modulus/2, modulus/2]: registers that
    wrap independently (the total and its TOU registers) compare modulo the modulus."""
    x = np.asarray(x, dtype=np.float64)
    if modulus is None:
        return x
    mod = np.asarray(modulus, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    ok = np.isfinite(mod)
    safe = np.where(ok, mod, 1.0)
    return np.where(ok, x - safe * np.round(x / safe), x)


def validate_profile(
    registers: NDArray[np.float64],
    quality: NDArray[np.integer],
    max_step: NDArray[np.float64],
    *,
    frozen: NDArray[np.float64] | None = None,
    frozen_quality: NDArray[np.integer] | None = None,
    per_day: int = 96,
    modulus: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], ProfileCheck]:
    """Validate profile registers (n, T+1); return the registers with missing day boundaries
    filled from frozen registers (``frozen`` (n, D+1), not SUSPECT by ``frozen_quality``;
    rule FROM_FROZEN) and the check.

    A boundary is bad when missing, or when both intervals around it fail (a spike up then
    back down: the boundary is the outlier), or when it is SUSPECT and an interval next to
    it fails or is unknown. Registers that wrapped at ``modulus`` (n,) are unwrapped first
    (:func:`unwrap`; the returned registers are continuous, ROLLOVER on the interval). A
    SUSPECT boundary with known, plausible intervals either side is accepted and keeps
    the SUSPECT rule (VEE decided, and says why). An interval that fails alone (a reset, a
    single implausible jump) is left failing: no boundary can be blamed.
    """
    reg = np.array(registers, dtype=np.float64, copy=True)
    q = np.asarray(quality)
    if reg.ndim != 2 or q.shape != reg.shape or reg.shape[1] < 2:
        raise ValueError(
            f"validate_profile: registers (n, T+1 ≥ 2) and quality of the same shape"
            f" (got {reg.shape} and {q.shape})"
        )
    n, t1 = reg.shape
    b_rules = np.zeros((n, t1), dtype=np.int32)
    if frozen is not None:
        fz = np.asarray(frozen, dtype=np.float64)
        days = (t1 - 1) // per_day
        if per_day <= 0 or (t1 - 1) % per_day or fz.shape != (n, days + 1):
            raise ValueError(
                f"validate_profile: frozen must be (n, T/per_day + 1) = ({n}, {days + 1}) with"
                f" T a whole number of days of {per_day} (got {fz.shape}, T = {t1 - 1})"
            )
        at = reg[:, ::per_day]  # a view: filling it fills reg
        fill = np.isnan(at) & np.isfinite(fz)
        if frozen_quality is not None:  # a SUSPECT frozen register fills nothing
            fill &= (np.asarray(frozen_quality) & int(Quality.SUSPECT)) == 0
        at[fill] = fz[fill]
        b_rules[:, ::per_day] |= np.where(fill, int(Rule.FROM_FROZEN), 0).astype(np.int32)
    reg, wrapped = unwrap(reg, modulus, max_step)  # registers returned continuous
    suspect = (q & int(Quality.SUSPECT)) != 0
    missing = np.isnan(reg)
    b_rules |= np.where(missing, int(Rule.GAP), 0).astype(np.int32)
    b_rules |= np.where(suspect & ~missing, int(Rule.SUSPECT), 0).astype(np.int32)
    d = np.diff(reg, axis=1)
    step = np.broadcast_to(np.asarray(max_step, dtype=np.float64).reshape(-1, 1), d.shape)
    i_rules = np.where(np.isnan(d), int(Rule.GAP), 0).astype(np.int32)
    i_rules |= np.where(d < 0, int(Rule.NEGATIVE), 0).astype(np.int32)
    i_rules |= np.where(d > step, int(Rule.SPIKE), 0).astype(np.int32)
    i_rules |= np.where(wrapped[:, 1:], int(Rule.ROLLOVER), 0).astype(np.int32)
    fails = (d < 0) | (d > step)
    before = np.zeros((n, t1), dtype=bool)  # the interval ending at the boundary fails
    after = np.zeros((n, t1), dtype=bool)  # the interval starting at it fails
    before[:, 1:] = fails
    after[:, :-1] = fails
    outlier = before & after
    # at the edges one failing interval is all the evidence there is
    outlier[:, 0] = after[:, 0] & suspect[:, 0]
    outlier[:, -1] = before[:, -1] & suspect[:, -1]
    # a SUSPECT register is kept only when a known, plausible interval on each side it
    # has confirms it (one between two gaps confirms nothing)
    unknown = np.isnan(d)
    unconfirmed = np.zeros((n, t1), dtype=bool)
    unconfirmed[:, 1:] |= unknown
    unconfirmed[:, :-1] |= unknown
    bad = missing | outlier | (suspect & (before | after | unconfirmed))
    # the intervals around a bad boundary are re-derived after estimation: their own
    # failure is explained by it
    near_bad = np.zeros_like(fails)
    near_bad |= bad[:, :-1] | bad[:, 1:]
    i_rules = np.where(near_bad, i_rules & ~int(Rule.NEGATIVE | Rule.SPIKE), i_rules)
    if frozen is not None:  # a bad register at midnight: the frozen one there, if good
        fz_ok = np.isfinite(fz)
        if frozen_quality is not None:
            fz_ok &= (np.asarray(frozen_quality) & int(Quality.SUSPECT)) == 0
        swap = bad[:, ::per_day] & ~missing[:, ::per_day] & fz_ok
        offset = 0.0
        if modulus is not None:  # into the continuous registers' terms
            mod = np.asarray(modulus, dtype=np.float64).reshape(-1, 1)
            offset = np.cumsum(wrapped, axis=1)[:, ::per_day] * np.where(np.isfinite(mod), mod, 0)
        reg[:, ::per_day] = np.where(swap, fz + offset, reg[:, ::per_day])
        bad[:, ::per_day] &= ~swap
        b_rules[:, ::per_day] |= np.where(swap, int(Rule.FROM_FROZEN), 0).astype(np.int32)
    return reg, ProfileCheck(b_rules, i_rules.astype(np.int32), bad)


def validate_frozen(
    frozen: NDArray[np.float64],
    quality: NDArray[np.integer],
    day_energy: NDArray[np.float64],
    *,
    tou: NDArray[np.float64] | None = None,
    policy: VeePolicy = DEFAULT_POLICY,
    modulus: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Rules for daily frozen registers (n, D+1) and for each day (n, D).

    ``day_energy`` (n, D): the day's validated profile energy (secondary, NaN where any of
    its intervals is not validated). A day fails the sum-check when both frozen registers
    and the day's energy are known and ``|F[d+1] − F[d] − energy| > sum_tolerance`` (F
    continuous: :func:`unwrap`); a
    frozen register below the previous one is NOT_MONOTONIC (both days fail). ``tou``
    (n, 4, D+1): the tariff registers 1.8.1…1.8.4; where all four and the total are known
    and ``|Σ tou − total| > tou_tolerance`` the boundary fails TOU_SUM.
    """
    f = np.asarray(frozen, dtype=np.float64)
    q = np.asarray(quality)
    e = np.asarray(day_energy, dtype=np.float64)
    n, d1 = f.shape
    if q.shape != f.shape or e.shape != (n, d1 - 1):
        raise ValueError(
            f"validate_frozen: frozen (n, D+1), quality alike, day_energy (n, D)"
            f" (got {f.shape}, {q.shape}, {e.shape})"
        )
    rules = np.where(np.isnan(f), int(Rule.GAP), 0).astype(np.int32)
    rules |= np.where((q & int(Quality.SUSPECT)) != 0, int(Rule.SUSPECT), 0).astype(np.int32)
    delta = np.diff(f, axis=1)
    day = np.where(np.isnan(delta), int(Rule.GAP), 0).astype(np.int32)
    day |= np.where(delta < 0, int(Rule.NOT_MONOTONIC), 0).astype(np.int32)
    off = np.abs(delta - e) > policy.sum_tolerance_kwh  # False where anything is NaN
    day |= np.where(off & ~(delta < 0), int(Rule.SUM_CHECK), 0).astype(np.int32)
    if tou is not None:
        t = np.asarray(tou, dtype=np.float64)
        if t.shape != (n, 4, d1):
            raise ValueError(f"validate_frozen: tou must be ({n}, 4, {d1}) (got {t.shape})")
        tou_off = np.abs(wrapped_diff(t.sum(axis=1) - f, modulus)) > policy.tou_tolerance_kwh
        rules |= np.where(tou_off, int(Rule.TOU_SUM), 0).astype(np.int32)
    return rules, day
