"""Abnormal-reading rules on a meter's own history and its area's energy balance (issue
10): consumption drop, the area's loss starting to track the meter (theft, stopped; down:
misassigned, a ledger multiplier too high), both at once, and the primary energy jumping
with a ledger multiplier change. Vectorised over meters × days; the service-line cleaning
is one least squares per area."""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray

from analytics.anomaly_base import (
    AnomalyInput,
    Rule,
    RuleHits,
    _day_rule,
    _day_starts,
    _p,
    _per_meter,
    _pick,
)


def _split_stats(x: NDArray[np.float64], min_days: int):
    """Best split of (n, D) daily values (NaN: unknown) by Welch's z of mean(before) −
    mean(after): (day d, z, mean before, mean after) per meter, d = −1 where none."""
    z, mb, ma = _split_matrix(x, min_days)
    best = np.abs(z).argmax(axis=1)
    zb = _pick(z, best)
    return np.where(zb != 0, best + 1, -1), zb, _pick(mb, best), _pick(ma, best)


def _split_matrix(x: NDArray[np.float64], min_days: int):
    """Welch's z, mean before, mean after for every split day 1 … D−1: (n, D − 1) each."""
    ok = np.isfinite(x)
    v = np.where(ok, x, 0.0)
    c = np.cumsum(np.c_[np.zeros(len(x)), ok], axis=1)[:, 1:-1]
    s = np.cumsum(v, axis=1)[:, :-1]
    s2 = np.cumsum(v * v, axis=1)[:, :-1]
    cn, cs, cs2 = ok.sum(1, keepdims=True), v.sum(1, keepdims=True), (v * v).sum(1, keepdims=True)
    na, sa, sa2 = cn - c, cs - s, cs2 - s2
    with np.errstate(invalid="ignore", divide="ignore"):
        mb, ma = s / c, sa / na
        vb = np.maximum(s2 / c - mb**2, 0.0) * c / (c - 1)
        va = np.maximum(sa2 / na - ma**2, 0.0) * na / (na - 1)
        z = (mb - ma) / np.sqrt(vb / c + va / na)
    z = np.where((c >= min_days) & (na >= min_days) & np.isfinite(z), z, 0.0)
    return z, mb, ma


def _consumption_drop(inp: AnomalyInput, rule: Rule) -> RuleHits:
    starts = _day_starts(inp.day_of)
    daily = np.add.reduceat(inp.energy, starts, axis=1)  # NaN if any interval unknown
    day, z, before, after = _split_stats(daily, int(_p(rule, "min_days", 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = 1.0 - after / before
    hit = (day >= 0) & (z >= _p(rule, "min_z", 3.0)) & (drop >= _p(rule, "min_drop", 0.15))
    return _day_rule(inp, rule, starts, day, hit, drop, z=z, before=before, after=after)


def _cleaned_dloss(inp: AnomalyInput) -> NDArray[np.float64]:
    """Δloss less what the area's members' own service lines explain: per area, least
    squares of Δloss on every member's Δ(E²) (a line's I²R goes with its load squared, and
    with spiky loads it is most of what moves the loss from one interval to the next); the
    residual per member row. A loop per area (each area its own regression)."""
    dr = np.diff(inp.area_loss, axis=1, prepend=np.nan)
    e2 = np.diff(np.nan_to_num(inp.energy) ** 2, axis=1, prepend=np.nan)
    out = dr.copy()
    areas = np.unique(inp.area_of[inp.area_of >= 0])
    for a in areas:
        rows = np.flatnonzero((inp.area_of == a) & np.isfinite(inp.area_loss).any(axis=1))
        if len(rows) == 0:
            continue
        x = e2[rows].T  # (T, m)
        with warnings.catch_warnings():  # an interval every member misses: NaN, as it should
            warnings.simplefilter("ignore", RuntimeWarning)
            y = np.nanmedian(dr[rows], axis=0)
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
        if ok.sum() <= 2 * len(rows):
            continue  # too few intervals to fit: left as is
        coef = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
        out[rows] = dr[rows] - np.where(np.isfinite(x), x, 0.0) @ coef
    return out


def _others_removed(
    inp: AnomalyInput, dr: NDArray[np.float64], min_days: float, min_z: float
) -> NDArray[np.float64]:
    """Δloss (n, T) less what the area's *other* members with a clear β split (|z| ≥ min_z:
    a large theft, a misassigned meter, a wrong multiplier) put into it: β_before·ΔE before
    their split, β_after·ΔE after. Their loads are noise in everyone else's β; one pass."""
    if inp.area_of is None or min_z <= 0:
        return dr
    starts, z, bb, ba = _beta_split(inp, min_days, dr)
    best = np.abs(z).argmax(axis=1)
    sure = (np.abs(_pick(z, best)) >= min_z) & (inp.area_of >= 0)
    t0 = starts[np.clip(best + 1, 0, len(starts) - 1)]
    after = np.arange(inp.energy.shape[1])[None, :] >= t0[:, None]
    de = np.nan_to_num(np.diff(inp.energy, axis=1, prepend=np.nan))
    beta = np.where(after, _pick(ba, best)[:, None], _pick(bb, best)[:, None])
    own = np.where(sure[:, None], np.nan_to_num(beta) * de, 0.0)
    areas = np.maximum(inp.area_of, 0)
    total = np.zeros((int(areas.max()) + 1, own.shape[1]))
    np.add.at(total, areas, own)
    return dr - (total[areas] - own)


def _beta_split(inp: AnomalyInput, min_days: float, dr: NDArray[np.float64] | None = None):
    """β = Σ Δloss·ΔE / Σ ΔE² before and after each split day (first differences keep each
    meter's own switching and drop the daily shape that all meters share): (starts, z of
    β_after − β_before, β_before, β_after), (n, D − 1) each; z = 0 where a side is short."""
    starts, z, bb, ba, _ = _beta_split_se(inp, min_days, dr)
    return starts, z, bb, ba


def _beta_split_se(inp: AnomalyInput, min_days: float, dr: NDArray[np.float64] | None = None):
    """`_beta_split` and the standard error of β_after − β_before (NaN where a side is short)."""
    starts = _day_starts(inp.day_of)
    dr = np.diff(inp.area_loss, axis=1, prepend=np.nan) if dr is None else dr
    de = np.diff(inp.energy, axis=1, prepend=np.nan)
    ok = np.isfinite(dr) & np.isfinite(de)
    dr, de = np.where(ok, dr, 0.0), np.where(ok, de, 0.0)
    p, q, rr = (np.add.reduceat(a, starts, axis=1) for a in (dr * de, de * de, dr * dr))
    k = np.add.reduceat(ok.astype(float), starts, axis=1)
    cp, cq, cr, ck = (np.cumsum(a, axis=1)[:, :-1] for a in (p, q, rr, k))
    tp, tq, tr, tk = (a.sum(axis=1, keepdims=True) for a in (p, q, rr, k))
    min_k = min_days * 0.5 * np.median(np.diff(np.r_[starts, len(inp.day_of)]))
    with np.errstate(invalid="ignore", divide="ignore"):
        bb, ba = cp / cq, (tp - cp) / (tq - cq)
        vb = np.maximum(cr / ck - bb**2 * cq / ck, 0.0) / cq  # residual variance / Σ ΔE²
        va = np.maximum((tr - cr) / (tk - ck) - ba**2 * (tq - cq) / (tk - ck), 0.0) / (tq - cq)
        z = (ba - bb) / np.sqrt(vb + va)
        usable = (ck >= min_k) & (tk - ck >= min_k) & np.isfinite(z)
        se = np.where(usable, np.sqrt(vb + va), np.nan)
    return starts, np.where(usable, z, 0.0), bb, ba, se


def _loss_step(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    """A meter whose load starts to show in its area's loss (theft, stopped) steps up by
    ≈ share/(1 − share); one that left the area's sales wrongly (misassigned, a ledger
    multiplier too high) steps down; at the day of a ledger multiplier change: wrong
    multiplier."""
    if inp.area_loss is None or inp.energy.shape[1] < 2:
        return None
    starts, z, bb, ba = _beta_split(inp, _p(rule, "min_days", 2))
    best = np.abs(z).argmax(axis=1)
    at_change = np.zeros(len(best), dtype=bool)
    if inp.multiplier_change is not None:  # the ledger says when: test that day
        mc = inp.multiplier_change
        mday = np.where(mc >= 0, inp.day_of[np.clip(mc, 0, None)] - inp.day_of[0], 0)
        at_change = (mday >= 1) & (_pick(z, mday - 1) != 0)
        best = np.where(at_change, mday - 1, best)
    zb, before, after = _pick(z, best), _pick(bb, best), _pick(ba, best)
    step = after - before
    day = np.where(zb != 0, best + 1, -1)
    big = np.abs(step) >= _p(rule, "min_step", 0.12)
    min_z = np.where(at_change, _p(rule, "min_z_at_change", 3.0), _p(rule, "min_z", 6.0))
    hit = (day >= 0) & (np.abs(zb) >= min_z) & big
    neg = str(rule.params.get("negative_suggests", rule.suggests))
    kinds = np.where(step < 0, neg, rule.suggests)
    kinds = np.where(at_change, str(rule.params.get("multiplier_suggests", rule.suggests)), kinds)
    extra = {"z": zb, "before": before, "after": after}
    return _day_rule(inp, rule, starts, day, hit, step, kinds.astype(object), **extra)


def _drop_with_loss(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    """Theft's two sides at once: the meter's daily energy drops at a split day and, from
    that same day, its area's loss starts tracking its load (β step > 0)."""
    if inp.area_loss is None or inp.energy.shape[1] < 2:
        return None
    min_days = int(_p(rule, "min_days", 2))
    clean = inp.area_of is not None and bool(rule.params.get("clean_service_loss", True))
    starts, z, bb, ba = _beta_split(inp, min_days, _cleaned_dloss(inp) if clean else None)
    dzm, mb, ma = _split_matrix(np.add.reduceat(inp.energy, starts, axis=1), min_days)
    # the day where both sides are strongest at once: max over days of min(drop z, loss z)
    both = np.minimum(dzm, z)
    col = both.argmax(axis=1)
    day = np.where((dzm != 0) & (z != 0), 1, 0)[np.arange(len(col)), col] * (col + 1)
    day = np.where(day > 0, day, -1)
    dz, before, after = _pick(dzm, col), _pick(mb, col), _pick(ma, col)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = 1.0 - after / before
    zl, step = _pick(z, col), _pick(ba, col) - _pick(bb, col)
    hit = (
        (day >= 0) & (dz >= _p(rule, "min_drop_z", 2.5)) & (drop >= _p(rule, "min_drop", 0.15))
        & (zl >= _p(rule, "min_loss_z", 2.0)) & (step >= _p(rule, "min_step", 0.1))
    )  # fmt: skip
    return _day_rule(inp, rule, starts, day, hit, drop, drop_z=dz, loss_z=zl, loss_step=step)


def _drop_balance(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    """A large drop of the meter's daily energy that the area's balance bears out: at the
    split day of the strongest drop δ, a stolen share δ would step β (the loss per kWh the
    meter registers) up by δ/(1 − δ); hit when the measured step is within `max_z_below`
    standard errors of that (and above `min_step`). Reaches the small households whose β
    step is too noisy to tell from 0 (drop_with_loss) but not to tell from δ/(1 − δ)."""
    if inp.area_loss is None or inp.energy.shape[1] < 2:
        return None
    min_days = int(_p(rule, "min_days", 2))
    clean = inp.area_of is not None and bool(rule.params.get("clean_service_loss", True))
    dr = _cleaned_dloss(inp) if clean else np.diff(inp.area_loss, axis=1, prepend=np.nan)
    dr = _others_removed(inp, dr, min_days, _p(rule, "others_min_z", 0.0))
    starts, _, bb, ba, se = _beta_split_se(inp, min_days, dr)
    dzm, mb, ma = _split_matrix(np.add.reduceat(inp.energy, starts, axis=1), min_days)
    col = dzm.argmax(axis=1)
    dz, s = _pick(dzm, col), _pick(se, col)
    day = np.where((dz > 0) & np.isfinite(s), col + 1, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = 1.0 - _pick(ma, col) / _pick(mb, col)
        step = _pick(ba, col) - _pick(bb, col)
        z_exp = (step - drop / (1.0 - drop)) / s  # against the step a theft of δ would make
        hit = (
            (day >= 0) & (dz >= _p(rule, "min_drop_z", 3.0))
            & (drop >= _p(rule, "min_drop", 0.25)) & (drop < 1.0)
            & (z_exp >= -_p(rule, "max_z_below", 2.0)) & (step >= _p(rule, "min_step", 0.0))
        )  # fmt: skip
    return _day_rule(inp, rule, starts, day, hit, drop, drop_z=dz, loss_step=step, z_vs_theft=z_exp)


def _multiplier_jump(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    """A ledger multiplier change that the field did not make: the primary energy jumps by
    the ledger's ratio at that interval (a real CT swap leaves it continuous: the secondary
    register slows by the same ratio). Hit when the mean after / before lies nearer (in log)
    to the ratio than to 1 and the jump's z is large."""
    if inp.multiplier_change is None or inp.multiplier_ratio is None:
        return None
    n_t = inp.energy.shape[1]
    k = inp.multiplier_change
    after = np.arange(n_t)[None, :] >= k[:, None]
    e = inp.energy
    ok = np.isfinite(e)
    with np.errstate(invalid="ignore", divide="ignore"):
        sides = []
        for m in (ok & ~after, ok & after):  # before, after
            cnt = m.sum(axis=1)
            mean = np.where(m, e, 0.0).sum(axis=1) / cnt
            var = np.where(m, (e - mean[:, None]) ** 2, 0.0).sum(axis=1) / (cnt - 1)
            sides.append((cnt, mean, var))
        (nb, mb, vb), (na, ma, va) = sides
        z = (ma - mb) / np.sqrt(vb / nb + va / na)
        observed = np.log(ma / mb)
        expected = np.log(inp.multiplier_ratio)
        nearer = np.abs(observed - expected) < np.abs(observed)
    min_n = _p(rule, "min_intervals", 96)
    hit = (k >= 0) & (nb >= min_n) & (na >= min_n) & nearer & (np.abs(z) >= _p(rule, "min_z", 3.0))
    ratio = np.exp(observed)
    return _per_meter(
        rule, hit, k, np.where(hit, na, 0), ratio, z=z, ledger_ratio=inp.multiplier_ratio
    )
