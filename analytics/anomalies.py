"""Abnormal-reading rules (issue 10), vectorised over meters × intervals.

Each rule turns arrays into a per-interval mask (n, T) and an evidence value, summarised per
meter (`RuleHits`): hit, first interval (since when), how many intervals, the evidence. The
rules' parameters, severities and weights are data (analytics/anomaly_rules.toml); the
score and the worklist are in analytics/anomaly_score.py; the data classes in
anomaly_base.py, the balance rules in anomaly_balance.py. A loop runs over the rules only.
Missing is NaN and never hits a rule: no data, no verdict.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from analytics.anomaly_balance import (
    _consumption_drop,
    _drop_balance,
    _drop_with_loss,
    _loss_step,
    _multiplier_jump,
)
from analytics.anomaly_base import (
    RULE_NAMES,
    RULES_FILE,
    SEVERITIES,
    AnomalyInput,
    Events,
    Rule,
    RuleHits,
    _p,
    _per_meter,
    _summary,
    load_rules,
    sustained,
    worklist_policy,
)
from analytics.anomaly_voltage import _voltage_drop_step
from analytics.energy import Flag
from analytics.lineloss import Status

__all__ = [
    "RULES_FILE", "RULE_NAMES", "SEVERITIES", "AnomalyInput", "Events", "Rule", "RuleHits",
    "evaluate", "load_rules", "sustained", "worklist_policy",
]  # fmt: skip


def evaluate(inp: AnomalyInput, rules: dict[str, Rule]) -> dict[str, RuleHits]:
    """Every rule in `rules` whose inputs are present → its hits."""
    out: dict[str, RuleHits] = {}
    for name, rule in rules.items():
        hits = _RULES[name](inp, rule)
        if hits is not None:
            out[name] = hits
    return out


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
    "drop_balance": _drop_balance,
    "voltage_drop_step": _voltage_drop_step,
    "multiplier_jump": _multiplier_jump,
    "area_loss_high": lambda i, r: _area_status(i, r, Status.HIGH),
    "area_loss_negative": lambda i, r: _area_status(i, r, Status.NEGATIVE),
    "meter_error": _meter_error,
    "misassigned": lambda i, r: _flag_rule(i.misassigned, r),
    "wrong_multiplier": lambda i, r: _flag_rule(i.wrong_multiplier, r),
}
