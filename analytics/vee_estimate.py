"""VEE estimation with provenance (pure numpy): fill what validation found bad.

Profile registers (n, T+1): a run of bad boundaries between good registers at ``p`` and
``q`` (the gap) is filled
* linearly, ``R[p] + (R[q] − R[p])·(j − p)/(q − p)``, when it is at most
  ``max_linear_gap`` registers long (rule LINEAR);
* from the same-day-type profile when longer: the profile's cumulative energy across the gap
  scaled to the register delta, ``R[p] + (R[q] − R[p])·(C[j] − C[p])/(C[q] − C[p])``
  (PROFILE | SCALED), so the energy over the gap is exactly the meter's;
* at an edge (only one side known) the profile unscaled (PROFILE);
* where the profile is missing or flat across a closed gap: linearly (LINEAR); where nothing
  works, or the register went back across the gap: NaN, UNESTIMATED.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from analytics.vee import DEFAULT_POLICY, Method, Rule, VeePolicy

__all__ = ["day_type_profile", "estimate_frozen", "estimate_profile", "estimate_tou"]


def day_type_profile(
    history: NDArray[np.float64], history_types: NDArray[np.integer], target_types: NDArray
) -> NDArray[np.float64]:
    """Mean interval energy (n, D·P) for D target days from H history days (n, H, P) of the
    same day type (e.g. 0 weekday, 1 weekend); NaN where no history day of that type has a
    value at that interval. A loop per day type (a handful)."""
    h = np.asarray(history, dtype=np.float64)
    ht = np.asarray(history_types).ravel()
    tt = np.asarray(target_types).ravel()
    if h.ndim != 3 or h.shape[1] != ht.size:
        raise ValueError(f"day_type_profile: history (n, H, P) with H = {ht.size} (got {h.shape})")
    n, _, p = h.shape
    out = np.full((n, tt.size, p), np.nan)
    for kind in np.unique(tt):
        same = h[:, ht == kind, :]
        count = np.sum(~np.isnan(same), axis=1)
        total = np.nansum(same, axis=1)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        out[:, tt == kind, :] = mean[:, None, :]
    return out.reshape(n, tt.size * p)


def _neighbours(good: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For each position the index of the last good one at or before it (−1: none) and of
    the first good one at or after it (T+1: none)."""
    t1 = good.shape[1]
    idx = np.broadcast_to(np.arange(t1), good.shape)
    prev = np.maximum.accumulate(np.where(good, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(good, idx, t1)[:, ::-1], axis=1)[:, ::-1]
    return prev, nxt


def estimate_profile(
    registers: NDArray[np.float64],
    bad: NDArray[np.bool_],
    profile: NDArray[np.float64] | None,
    policy: VeePolicy = DEFAULT_POLICY,
) -> tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.int32]]:
    """Registers (n, T+1) with the ``bad`` ones estimated; the method (n, T+1) and the
    estimation rules (n, T+1). ``profile`` (n, T): expected energy per interval (secondary
    kWh), e.g. from :func:`day_type_profile`; None: no profile."""
    reg = np.asarray(registers, dtype=np.float64)
    n, t1 = reg.shape
    bad = np.asarray(bad, dtype=bool) | np.isnan(reg)
    good = ~bad
    prev, nxt = _neighbours(good)
    rows = np.arange(n)[:, None]
    has_p, has_q = prev >= 0, nxt < t1
    rp = np.where(has_p, reg[rows, np.clip(prev, 0, t1 - 1)], np.nan)
    rq = np.where(has_q, reg[rows, np.clip(nxt, 0, t1 - 1)], np.nan)
    j = np.arange(t1)[None, :]
    span = nxt - prev
    with np.errstate(invalid="ignore", divide="ignore"):
        linear = rp + (rq - rp) * (j - prev) / span
    if profile is None:
        prof = np.full((n, t1 - 1), np.nan)
    else:
        prof = np.asarray(profile, dtype=np.float64)
        if prof.shape != (n, t1 - 1):
            raise ValueError(
                f"estimate_profile: profile must be ({n}, {t1 - 1}) (got {prof.shape})"
            )
    # cumulative profile C[k] = Σ_{i<k} prof_i, and how many NaNs it crossed: a span is
    # usable only where it crosses none
    cum = np.zeros((n, t1))
    cum[:, 1:] = np.cumsum(np.nan_to_num(prof, nan=0.0), axis=1)
    holes = np.zeros((n, t1), dtype=np.int64)
    holes[:, 1:] = np.cumsum(np.isnan(prof) | (prof < 0), axis=1)
    cp = np.where(has_p, cum[rows, np.clip(prev, 0, t1 - 1)], np.nan)
    cq = np.where(has_q, cum[rows, np.clip(nxt, 0, t1 - 1)], np.nan)
    hp = holes[rows, np.clip(prev, 0, t1 - 1)]
    hq = holes[rows, np.clip(nxt, 0, t1 - 1)]
    both = has_p & has_q
    closed_ok = both & (hq == hp) & (cq - cp > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = rp + (rq - rp) * (cum - cp) / (cq - cp)
    fwd_ok = has_p & ~has_q & (holes == hp)  # gap at the end: from R[p] on
    back_ok = has_q & ~has_p & (hq == holes)  # gap at the start: up to R[q]
    short = both & (span - 1 <= policy.max_linear_gap)
    use_linear = both & (short | ~closed_ok)
    went_back = both & (rq < rp)

    est = np.full((n, t1), np.nan)
    rules = np.zeros((n, t1), dtype=np.int32)
    est = np.where(use_linear, linear, est)
    rules = np.where(use_linear, int(Rule.LINEAR), rules)
    pick = closed_ok & ~use_linear
    est = np.where(pick, scaled, est)
    rules = np.where(pick, int(Rule.PROFILE | Rule.SCALED), rules)
    est = np.where(fwd_ok, rp + cum - cp, est)
    est = np.where(back_ok, rq - (cq - cum), est)
    rules = np.where(fwd_ok | back_ok, int(Rule.PROFILE), rules)
    est = np.where(went_back, np.nan, est)
    out = np.where(bad, est, reg)
    unest = bad & np.isnan(out)
    rules = np.where(bad, rules, 0)
    rules = np.where(unest, int(Rule.UNESTIMATED), rules).astype(np.int32)
    method = np.where(bad & ~unest, Method.ESTIMATED, Method.ACTUAL).astype(np.int8)
    return out, method, rules


def estimate_frozen(
    frozen: NDArray[np.float64],
    bad: NDArray[np.bool_],
    at_profile: NDArray[np.float64],
    policy: VeePolicy = DEFAULT_POLICY,
) -> tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.int32]]:
    """Daily frozen registers (n, D+1) with the ``bad`` ones estimated: from the validated
    profile register at the freeze instant (``at_profile`` (n, D+1), FROM_PROFILE), else
    linearly between good frozen registers at most ``max_linear_days`` apart (LINEAR)."""
    f = np.asarray(frozen, dtype=np.float64)
    bad = np.asarray(bad, dtype=bool) | np.isnan(f)
    ap = np.asarray(at_profile, dtype=np.float64)
    take = bad & np.isfinite(ap)
    out = np.where(take, ap, f)
    rules = np.where(take, int(Rule.FROM_PROFILE), 0).astype(np.int32)
    rest = bad & ~take
    lin, _, lin_rules = estimate_profile(
        np.where(rest, np.nan, out),
        rest,
        None,
        VeePolicy(max_linear_gap=policy.max_linear_days),
    )
    d1 = f.shape[1]
    prev, nxt = _neighbours(~rest)
    within = (nxt - prev - 1) <= policy.max_linear_days
    fill = rest & np.isfinite(lin) & within & (prev >= 0) & (nxt < d1)
    out = np.where(fill, lin, out)
    rules = np.where(fill, lin_rules, rules)
    unest = bad & np.isnan(out)
    rules = np.where(unest, int(Rule.UNESTIMATED), rules).astype(np.int32)
    method = np.where(bad & ~unest, Method.ESTIMATED, Method.ACTUAL).astype(np.int8)
    return out, method, rules


def estimate_tou(
    tou: NDArray[np.float64], total: NDArray[np.float64], modulus: NDArray | None = None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """TOU registers (n, 4, D+1) with a single missing one filled as the total minus the
    other three (TOU_REMAINDER) where that is ≥ 0; and where it was filled."""
    t = np.asarray(tou, dtype=np.float64)
    tot = np.asarray(total, dtype=np.float64)
    missing = np.isnan(t)
    one = missing.sum(axis=1) == 1
    rest = tot - np.nansum(t, axis=1)
    if modulus is not None:  # registers wrap independently: the remainder modulo
        mod = np.asarray(modulus, dtype=np.float64).reshape(-1, 1)
        rest = np.where(np.isfinite(mod), np.mod(rest, np.where(np.isfinite(mod), mod, 1)), rest)
    fill = missing & (one & np.isfinite(rest) & (rest >= 0))[:, None, :]
    return np.where(fill, rest[:, None, :], t), fill
