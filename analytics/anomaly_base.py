"""The abnormal-reading rules' data (issue 10): the rules file, the arrays a run takes
(`AnomalyInput`), what a rule gives per meter (`RuleHits`), and the helpers the rules share.
The rules are in analytics/anomalies.py (readings, events, issue 9's flags) and
analytics/anomaly_balance.py (own history and the area's energy balance)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

RULES_FILE = Path(__file__).with_name("anomaly_rules.toml")
SEVERITIES = ("info", "low", "medium", "high")
RULE_NAMES = (
    "non_monotonic", "spike", "stopped", "zero_energy_current", "reverse_energy",
    "voltage_loss", "current_loss", "current_unbalance", "clock_drift",
    "demand_over_contract", "cover_open", "power_down", "consumption_drop", "loss_step",
    "drop_with_loss", "area_loss_high", "area_loss_negative", "meter_error", "misassigned",
    "wrong_multiplier", "multiplier_jump", "drop_balance", "voltage_drop_step",
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
    bus_voltage: NDArray[np.float64] | None = None  # (n, T) V at the LV bus of its area


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


def _day_starts(day_of: NDArray[np.int64]) -> NDArray[np.int64]:
    if np.any(np.diff(day_of) < 0):
        raise ValueError("anomalies: day_of must be non-decreasing")
    return np.flatnonzero(np.r_[True, np.diff(day_of) != 0])


def _day_rule(inp, rule, starts, day, hit, value, kinds=None, **extra) -> RuleHits:
    t0 = np.where(day >= 0, starts[np.clip(day, 0, len(starts) - 1)], -1)
    count = np.where(hit, inp.energy.shape[1] - t0, 0)
    return _per_meter(rule, hit, t0, count, value, kinds, **extra)


def _pick(a: NDArray, col: NDArray[np.int64]) -> NDArray:
    return np.take_along_axis(a, np.clip(col, 0, a.shape[1] - 1)[:, None], axis=1)[:, 0]
