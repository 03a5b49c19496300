"""One VEE pass over a block of days (pure numpy): validate the profile, estimate it,
derive the interval energy with its provenance, then validate and estimate the daily frozen
registers and the TOU registers against it.

Order matters: missing profile registers at midnight are taken from valid frozen registers
first (so a long gap is scaled to the frozen delta), and missing frozen registers from the
validated profile afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analytics.vee import (
    DEFAULT_POLICY,
    NOT_VALID,
    Rule,
    VeePolicy,
    unwrap,
    validate_frozen,
    validate_profile,
    wrapped_diff,
)
from analytics.vee_estimate import estimate_frozen, estimate_profile, estimate_tou

__all__ = ["VeeResult", "run_vee_block"]


@dataclass(frozen=True)
class VeeResult:
    """Validated values with their method (:class:`Method`) and rules (:class:`Rule` bits);
    ``*_valid`` is what billing may use. Registers in secondary kWh."""

    energy: NDArray[np.float64]  # (n, T) interval energy
    method: NDArray[np.int8]  # (n, T)
    rules: NDArray[np.int32]  # (n, T)
    valid: NDArray[np.bool_]  # (n, T)
    registers: NDArray[np.float64]  # (n, T+1) validated profile registers
    frozen: NDArray[np.float64]  # (n, D+1) daily frozen total (1.8.0*d)
    frozen_method: NDArray[np.int8]
    frozen_rules: NDArray[np.int32]
    frozen_valid: NDArray[np.bool_]
    tou: NDArray[np.float64]  # (n, 4, D+1) 1.8.1*d … 1.8.4*d
    tou_valid: NDArray[np.bool_]  # (n, D+1): all four validated
    day_rules: NDArray[np.int32]  # (n, D)


def run_vee_block(
    registers: NDArray[np.float64],
    quality: NDArray[np.integer],
    max_step: NDArray[np.float64],
    frozen: NDArray[np.float64],
    frozen_quality: NDArray[np.integer],
    *,
    per_day: int,
    tou: NDArray[np.float64] | None = None,
    profile: NDArray[np.float64] | None = None,
    policy: VeePolicy = DEFAULT_POLICY,
    modulus: NDArray[np.float64] | None = None,
) -> VeeResult:
    """VEE of D whole days: profile registers (n, D·per_day + 1), frozen (n, D+1), TOU
    (n, 4, D+1) or None (all NaN), the same-day-type profile (n, D·per_day) or None;
    ``modulus`` (n,): where the registers wrap (None: never). Registers come out as the
    meter shows them (wrapped), energies across a wrap right."""
    reg, check = validate_profile(
        registers,
        quality,
        max_step,
        frozen=frozen,
        frozen_quality=frozen_quality,
        per_day=per_day,
        modulus=modulus,
    )
    est, b_method, b_est_rules = estimate_profile(reg, check.bad, profile, policy)
    b_rules = check.boundary_rules | b_est_rules
    energy = np.diff(est, axis=1)
    method = np.maximum(b_method[:, :-1], b_method[:, 1:]).astype(np.int8)
    rules = check.interval_rules | b_rules[:, :-1] | b_rules[:, 1:]
    n, t = energy.shape
    days = t // per_day

    day_step = np.asarray(max_step, dtype=np.float64) * per_day
    f, _ = unwrap(np.asarray(frozen, dtype=np.float64), modulus, day_step)
    fq = np.asarray(frozen_quality)
    t4 = np.full((n, 4, days + 1), np.nan) if tou is None else np.asarray(tou, dtype=float)
    ok = np.isfinite(energy) & ((rules & NOT_VALID) == 0)
    day_energy = np.where(ok, energy, np.nan).reshape(n, days, per_day).sum(axis=2)
    f_rules, day_rules = validate_frozen(f, fq, day_energy, tou=t4, policy=policy, modulus=modulus)
    # a SUSPECT frozen register next to a failing day, or a missing one, is re-estimated
    day_fail = (day_rules & int(Rule.SUM_CHECK | Rule.NOT_MONOTONIC)) != 0
    f_bad = np.isnan(f) | (((f_rules & int(Rule.SUSPECT)) != 0) & _all_days_fail(day_fail))
    # the profile register at midnight (actual or estimated, not failing) stands in
    at_profile = np.where((b_rules[:, ::per_day] & NOT_VALID) == 0, est[:, ::per_day], np.nan)
    f_est, f_method, f_est_rules = estimate_frozen(f, f_bad, at_profile, policy)
    f_rules = f_rules | f_est_rules
    if np.any(f_bad):  # days around re-estimated registers: check again
        f_rules2, day_rules = validate_frozen(
            f_est, fq, day_energy, tou=t4, policy=policy, modulus=modulus
        )
        f_rules = f_rules | (f_rules2 & ~int(Rule.GAP | Rule.SUSPECT))
    day_fail = (day_rules & int(Rule.SUM_CHECK | Rule.NOT_MONOTONIC)) != 0
    rules = rules | np.repeat(np.where(day_fail, day_rules, 0), per_day, axis=1)
    valid = np.isfinite(energy) & ((rules & NOT_VALID) == 0)
    f_valid = np.isfinite(f_est) & ((f_rules & NOT_VALID) == 0) & ~_all_days_fail(day_fail)

    # TOU registers wrap on their own: compared with the total modulo the modulus
    t4_est, filled = estimate_tou(t4, np.where(f_valid, _wrap(f_est, modulus), np.nan), modulus)
    tou_ok = np.all(np.isfinite(t4_est), axis=1)
    off = wrapped_diff(t4_est.sum(axis=1) - f_est, modulus)
    tou_sum_off = np.abs(off) > policy.tou_tolerance_kwh
    f_rules = f_rules | np.where(np.any(filled, axis=1), int(Rule.TOU_REMAINDER), 0)
    tou_valid = tou_ok & ~tou_sum_off & f_valid
    return VeeResult(
        energy=energy,
        method=method,
        rules=rules.astype(np.int32),
        valid=valid,
        registers=_wrap(est, modulus),
        frozen=_wrap(f_est, modulus),
        frozen_method=f_method,
        frozen_rules=f_rules.astype(np.int32),
        frozen_valid=f_valid,
        tou=t4_est,
        tou_valid=tou_valid,
        day_rules=day_rules,
    )


def _all_days_fail(day_fail: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(n, D+1): every day next to the boundary fails (one that agrees with the day on one
    side is not to blame for the other)."""
    n, d = day_fail.shape
    left = np.ones((n, d + 1), dtype=bool)
    right = np.ones((n, d + 1), dtype=bool)
    left[:, 1:] = day_fail
    right[:, :-1] = day_fail
    return left & right


def _wrap(values: NDArray[np.float64], modulus) -> NDArray[np.float64]:
    """Registers as the meter shows them: continuous values back below the modulus."""
    if modulus is None:
        return values
    mod = np.asarray(modulus, dtype=np.float64)
    mod = mod.reshape(mod.shape + (1,) * (values.ndim - mod.ndim))
    return np.where(np.isfinite(mod), np.mod(values, np.where(np.isfinite(mod), mod, 1)), values)
