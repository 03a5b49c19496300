"""Abnormal-reading rules (issue 10), vectorised over meters × intervals.

Each rule turns arrays into a per-interval mask (n, T) and an evidence value, summarised per
meter (`RuleHits`): hit, first interval (since when), how many intervals, the evidence. The
rules' parameters, severities and weights are data (analytics/anomaly_rules.toml); the
score and the worklist are in analytics/anomaly_score.py. A loop runs over the rules only.
Missing is NaN and never hits a rule: no data, no verdict.
"""

from __future__ import annotations

import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analytics.energy import Flag
from analytics.lineloss import Status

RULES_FILE = Path(__file__).with_name("anomaly_rules.toml")
SEVERITIES = ("info", "low", "medium", "high")
RULE_NAMES = (
    "non_monotonic", "spike", "stopped", "zero_energy_current", "reverse_energy",
    "voltage_loss", "current_loss", "current_unbalance", "clock_drift",
    "demand_over_contract", "cover_open", "power_down", "consumption_drop", "loss_step",
    "drop_with_loss", "area_loss_high", "area_loss_negative", "meter_error", "misassigned",
    "wrong_multiplier", "multiplier_jump",
)  # fmt: skip


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    weight: float
    suggests: str
    params: dict[str, Any]


def load_rules(path: str | Path = RULES_FILE) -> dict[str, Rule]:
    """The rules file → {name: Rule}; a one-line ValueError for anything unknown or missing."""
    data = _read(path)
    rules: dict[str, Rule] = {}
    for name, body in data.get("rule", {}).items():
        if name not in RULE_NAMES:
            raise ValueError(f"{path}: unknown rule {name!r} (known: {', '.join(RULE_NAMES)})")
        body = dict(body)
        try:
            severity, weight = body.pop("severity"), body.pop("weight")
            suggests = body.pop("suggests")
        except KeyError as exc:
            raise ValueError(f"{path}: rule {name!r} lacks {exc.args[0]!r}") from None
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: rule {name!r}: severity {severity!r} not in {SEVERITIES}")
        if not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"{path}: rule {name!r}: weight must be a number ≥ 0, got {weight!r}")
        rules[name] = Rule(name, severity, float(weight), str(suggests), body)
    return rules


def _read(path: str | Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: anomaly rules file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None


def worklist_policy(path: str | Path = RULES_FILE) -> dict[str, float]:
    """The rules file's [worklist] table (min_score)."""
    data = _read(path).get("worklist", {})
    return {"min_score": float(data.get("min_score", 2.0))}


@dataclass(frozen=True)
class Events:
    """Long-form device events: meter row, interval index, kind, value (e.g. drift_s)."""

    meter: NDArray[np.int64]
    t: NDArray[np.int64]
    kind: NDArray[np.str_]
    value: NDArray[np.float64]


@dataclass
class AnomalyInput:
    """Arrays over n meters and T intervals of `step` seconds (NaN = unknown).

    energy: primary kWh imported per interval, flags: analytics.energy.Flag per interval,
    day_of: (T,) non-decreasing day number per interval. Optional: export (n, T) primary
    kWh; voltage / current (n, P, T) per phase; nominal_v, capacity_kwh (largest plausible
    primary kWh per interval), contract_kw (NaN: none), consumer (no export expected) (n,);
    area_loss (n, T) the loss of the meter's (ledger) area, area_status (n, T) its
    lineloss Status; events; issue 9's per-meter results."""

    energy: NDArray[np.float64]
    flags: NDArray[np.int8]
    day_of: NDArray[np.int64]
    step: int = 900
    export: NDArray[np.float64] | None = None
    voltage: NDArray[np.float64] | None = None
    current: NDArray[np.float64] | None = None
    nominal_v: NDArray[np.float64] | None = None
    capacity_kwh: NDArray[np.float64] | None = None
    contract_kw: NDArray[np.float64] | None = None
    consumer: NDArray[np.bool_] | None = None
    area_loss: NDArray[np.float64] | None = None
    area_status: NDArray[np.int8] | None = None
    events: Events | None = None
    meter_error_pct: NDArray[np.float64] | None = None
    meter_error_flagged: NDArray[np.bool_] | None = None
    misassigned: NDArray[np.bool_] | None = None
    wrong_multiplier: NDArray[np.bool_] | None = None
    # (n,) the interval of a ledger multiplier change (−1: none) and new / old multiplier
    multiplier_change: NDArray[np.int64] | None = None
    multiplier_ratio: NDArray[np.float64] | None = None
    area_of: NDArray[np.int64] | None = None  # (n,) ledger area per meter (−1: none)


@dataclass(frozen=True)
class RuleHits:
    """One rule over all meters (n,): hit, first interval (−1: none), intervals hit (for
    day rules: the intervals from the split day), evidence value and the suggested kind."""

    rule: str
    hit: NDArray[np.bool_]
    first: NDArray[np.int64]
    count: NDArray[np.int64]
    value: NDArray[np.float64]
    suggests: NDArray[np.object_]
    extra: dict[str, NDArray[np.float64]]


def sustained(mask: NDArray[np.bool_], run: int) -> NDArray[np.bool_]:
    """True where the interval lies in a run of ≥ `run` consecutive True (along the last axis)."""
    if run <= 1:
        return mask.copy()
    n_t = mask.shape[-1]
    c = np.zeros((*mask.shape[:-1], n_t + 1), dtype=np.int64)
    np.cumsum(mask, axis=-1, out=c[..., 1:])
    end = np.zeros(mask.shape, dtype=bool)
    if n_t >= run:
        end[..., run - 1 :] = (c[..., run:] - c[..., :-run]) == run
    ce = np.zeros_like(c)
    np.cumsum(end, axis=-1, out=ce[..., 1:])
    upto = np.minimum(np.arange(n_t) + run, n_t)
    return (ce[..., upto] - ce[..., :n_t]) > 0


def evaluate(inp: AnomalyInput, rules: dict[str, Rule]) -> dict[str, RuleHits]:
    """Every rule in `rules` whose inputs are present → its hits."""
    out: dict[str, RuleHits] = {}
    for name, rule in rules.items():
        hits = _RULES[name](inp, rule)
        if hits is not None:
            out[name] = hits
    return out


# -- summaries -------------------------------------------------------------------------


def _summary(rule: Rule, mask: NDArray[np.bool_], value: NDArray[np.float64], **extra) -> RuleHits:
    hit = mask.any(axis=1)
    first = np.where(hit, mask.argmax(axis=1), -1)
    masked = np.where(mask, np.abs(np.nan_to_num(value)), -np.inf)
    worst = np.take_along_axis(value, masked.argmax(axis=1)[:, None], axis=1)[:, 0]
    kinds = np.full(hit.shape, rule.suggests, dtype=object)
    worst = np.where(hit, worst, np.nan)
    return RuleHits(rule.name, hit, first, mask.sum(axis=1), worst, kinds, extra)


def _per_meter(rule: Rule, hit, first, count, value, kinds=None, **extra) -> RuleHits:
    kinds = np.full(hit.shape, rule.suggests, dtype=object) if kinds is None else kinds
    return RuleHits(
        rule.name, hit, np.where(hit, first, -1).astype(np.int64), count.astype(np.int64),
        np.where(hit, value, np.nan), kinds, extra,
    )  # fmt: skip


def _p(rule: Rule, key: str, default: float) -> float:
    return float(rule.params.get(key, default))


# -- register rules --------------------------------------------------------------------


def _non_monotonic(inp: AnomalyInput, rule: Rule) -> RuleHits:
    mask = inp.flags == Flag.RESET
    return _summary(rule, mask, np.where(mask, 1.0, np.nan))


def _spike(inp: AnomalyInput, rule: Rule) -> RuleHits:
    cap = np.full(inp.energy.shape[0], np.inf) if inp.capacity_kwh is None else inp.capacity_kwh
    with np.errstate(invalid="ignore"):
        mask = (inp.flags == Flag.IMPLAUSIBLE) | (inp.energy > cap[:, None])
    return _summary(rule, mask, inp.energy)


def _voltage_present(inp: AnomalyInput, frac: float) -> NDArray[np.bool_] | None:
    if inp.voltage is None or inp.nominal_v is None:
        return None
    with np.errstate(invalid="ignore"):
        return (inp.voltage >= frac * inp.nominal_v[:, None, None]).any(axis=1)


def _no_export(inp: AnomalyInput) -> NDArray[np.bool_]:
    if inp.export is None:
        return np.ones(inp.energy.shape, dtype=bool)
    return ~(inp.export > 0)


def _stopped(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    present = _voltage_present(inp, _p(rule, "voltage_present_frac", 0.7))
    if present is None:
        return None
    mask = (inp.energy == 0) & present & _no_export(inp)
    mask = sustained(mask, int(_p(rule, "min_run", 16)))
    return _summary(rule, mask, np.where(mask, 0.0, np.nan))


def _zero_energy_current(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.current is None:
        return None
    with np.errstate(invalid="ignore"):
        flowing = np.nanmax(np.where(np.isnan(inp.current), -np.inf, inp.current), axis=1)
    mask = (inp.energy == 0) & (flowing > _p(rule, "current_min_a", 0.5)) & _no_export(inp)
    mask = sustained(mask, int(_p(rule, "min_run", 4)))
    return _summary(rule, mask, flowing)


def _reverse_energy(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.export is None:
        return None
    consumer = np.ones(inp.energy.shape[0], bool) if inp.consumer is None else inp.consumer
    with np.errstate(invalid="ignore"):
        mask = consumer[:, None] & (inp.export >= _p(rule, "min_kwh", 0.01))
    mask = sustained(mask, int(_p(rule, "min_run", 4)))
    return _summary(rule, mask, inp.export)


# -- voltage and current ---------------------------------------------------------------


def _voltage_loss(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.voltage is None or inp.nominal_v is None:
        return None
    nom = inp.nominal_v[:, None, None]
    with np.errstate(invalid="ignore"):
        low = inp.voltage < _p(rule, "below_frac", 0.78) * nom
        healthy = inp.voltage >= _p(rule, "healthy_frac", 0.85) * nom
        other_ok = healthy.sum(axis=1, keepdims=True) > 0  # a low phase is never healthy
        cause = other_ok
        if inp.current is not None:
            cause = cause | (inp.current > _p(rule, "current_min_a", 0.5))
        phase = low & cause
    mask = sustained(phase.any(axis=1), int(_p(rule, "min_run", 4)))
    lowest = np.nanmin(np.where(np.isnan(inp.voltage), np.inf, inp.voltage), axis=1)
    return _summary(rule, mask, lowest)


def _current_loss(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.current is None or inp.voltage is None or inp.nominal_v is None:
        return None
    cur, nom = inp.current, inp.nominal_v[:, None, None]
    with np.errstate(invalid="ignore"):
        healthy = inp.voltage >= _p(rule, "healthy_frac", 0.85) * nom
        loaded = np.nanmax(np.where(np.isnan(cur), -np.inf, cur), axis=1, keepdims=True)
        carrying = loaded > _p(rule, "other_min_a", 1.0)
        phase = (cur < _p(rule, "below_a", 0.05)) & healthy & carrying
    mask = sustained(phase.any(axis=1), int(_p(rule, "min_run", 4)))
    return _summary(rule, mask, loaded[:, 0])


def _current_unbalance(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.current is None or inp.current.shape[1] < 2:
        return None
    cur = inp.current
    with np.errstate(invalid="ignore", divide="ignore"):
        hi = np.max(cur, axis=1)  # NaN if any phase unknown: no verdict
        ratio = (hi - np.min(cur, axis=1)) / hi
        mask = (hi >= _p(rule, "current_min_a", 1.0)) & (ratio > _p(rule, "limit", 0.5))
    mask = sustained(mask, int(_p(rule, "min_run", 16)))
    return _summary(rule, mask, ratio)


def _demand_over_contract(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.contract_kw is None:
        return None
    demand = inp.energy * 3600.0 / inp.step
    with np.errstate(invalid="ignore"):
        mask = demand > inp.contract_kw[:, None] * (1.0 + _p(rule, "margin", 0.05))
    return _summary(rule, mask, demand)


# -- events ----------------------------------------------------------------------------


def _event_rule(inp: AnomalyInput, rule: Rule, select: NDArray[np.bool_], min_count: int):
    n = inp.energy.shape[0]
    ev = inp.events
    m, t, v = ev.meter[select], ev.t[select], ev.value[select]
    count = np.bincount(m, minlength=n)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, m, t)
    worst = np.zeros(n)
    np.maximum.at(worst, m, np.abs(np.nan_to_num(v)))
    return _per_meter(rule, count >= max(min_count, 1), first, count, worst)


def _clock_drift(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.events is None:
        return None
    ev = inp.events
    sel = (ev.kind == "clock_drift") & (np.abs(ev.value) > _p(rule, "bound_s", 300))
    return _event_rule(inp, rule, sel, 1)


def _cover_open(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.events is None:
        return None
    return _event_rule(inp, rule, inp.events.kind == "cover_open", 1)


def _power_down(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.events is None:
        return None
    return _event_rule(inp, rule, inp.events.kind == "power_down", int(_p(rule, "min_count", 3)))


# -- history and balance ---------------------------------------------------------------


def _day_starts(day_of: NDArray[np.int64]) -> NDArray[np.int64]:
    if np.any(np.diff(day_of) < 0):
        raise ValueError("anomalies: day_of must be non-decreasing")
    return np.flatnonzero(np.r_[True, np.diff(day_of) != 0])


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


def _day_rule(inp, rule, starts, day, hit, value, kinds=None, **extra) -> RuleHits:
    t0 = np.where(day >= 0, starts[np.clip(day, 0, len(starts) - 1)], -1)
    count = np.where(hit, inp.energy.shape[1] - t0, 0)
    return _per_meter(rule, hit, t0, count, value, kinds, **extra)


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


def _beta_split(inp: AnomalyInput, min_days: float, dr: NDArray[np.float64] | None = None):
    """β = Σ Δloss·ΔE / Σ ΔE² before and after each split day (first differences keep each
    meter's own switching and drop the daily shape that all meters share): (starts, z of
    β_after − β_before, β_before, β_after), (n, D − 1) each; z = 0 where a side is short."""
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
    z = np.where((ck >= min_k) & (tk - ck >= min_k) & np.isfinite(z), z, 0.0)
    return starts, z, bb, ba


def _pick(a: NDArray, col: NDArray[np.int64]) -> NDArray:
    return np.take_along_axis(a, np.clip(col, 0, a.shape[1] - 1)[:, None], axis=1)[:, 0]


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


def _area_status(inp: AnomalyInput, rule: Rule, status: Status) -> RuleHits | None:
    if inp.area_status is None:
        return None
    mask = inp.area_status == status
    count = mask.sum(axis=1)
    hit = count >= _p(rule, "min_intervals", 96)
    return _per_meter(rule, hit, mask.argmax(axis=1), count, count.astype(float))


def _meter_error(inp: AnomalyInput, rule: Rule) -> RuleHits | None:
    if inp.meter_error_flagged is None or inp.meter_error_pct is None:
        return None
    err = inp.meter_error_pct
    with np.errstate(invalid="ignore"):
        slow = err < _p(rule, "theft_below_pct", -10.0)
    kinds = np.where(slow, "theft", rule.suggests).astype(object)
    hit = inp.meter_error_flagged.astype(bool)
    return _per_meter(rule, hit, np.zeros(len(hit)), np.zeros(len(hit)), err, kinds)


def _flag_rule(flags: NDArray[np.bool_] | None, rule: Rule) -> RuleHits | None:
    if flags is None:
        return None
    hit = np.asarray(flags, dtype=bool)
    zero = np.zeros(len(hit))
    return _per_meter(rule, hit, zero, zero, hit.astype(float))


_RULES = {
    "non_monotonic": _non_monotonic,
    "spike": _spike,
    "stopped": _stopped,
    "zero_energy_current": _zero_energy_current,
    "reverse_energy": _reverse_energy,
    "voltage_loss": _voltage_loss,
    "current_loss": _current_loss,
    "current_unbalance": _current_unbalance,
    "clock_drift": _clock_drift,
    "demand_over_contract": _demand_over_contract,
    "cover_open": _cover_open,
    "power_down": _power_down,
    "consumption_drop": _consumption_drop,
    "loss_step": _loss_step,
    "drop_with_loss": _drop_with_loss,
    "multiplier_jump": _multiplier_jump,
    "area_loss_high": lambda i, r: _area_status(i, r, Status.HIGH),
    "area_loss_negative": lambda i, r: _area_status(i, r, Status.NEGATIVE),
    "meter_error": _meter_error,
    "misassigned": lambda i, r: _flag_rule(i.misassigned, r),
    "wrong_multiplier": lambda i, r: _flag_rule(i.wrong_multiplier, r),
}
