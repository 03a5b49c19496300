"""Suspicion score per meter and fault kind from the rules' hits, and the ranked worklist.

score[m, k] = Σ over rules r hitting meter m that suggest kind k of weight_r (weights from
analytics/anomaly_rules.toml: transparent, one number per rule). A meter's kind is its
highest-scoring one; its theft score is score[m, 'theft']; the worklist ranks meters by
total score per area. No loop per meter: one per rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analytics.anomalies import SEVERITIES, Rule, RuleHits


@dataclass(frozen=True)
class Scores:
    kinds: tuple[str, ...]
    by_kind: NDArray[np.float64]  # (n, K)
    total: NDArray[np.float64]  # (n,)
    kind: NDArray[np.object_]  # (n,) the top kind, None where nothing hit
    since: NDArray[np.int64]  # (n,) earliest first interval of the hits (−1: none)

    def of(self, kind: str) -> NDArray[np.float64]:
        if kind not in self.kinds:
            return np.zeros(len(self.total))
        return self.by_kind[:, self.kinds.index(kind)]


def score(hits: dict[str, RuleHits], rules: dict[str, Rule], n: int) -> Scores:
    kinds = sorted({str(k) for h in hits.values() for k in set(h.suggests[h.hit])})
    by_kind = np.zeros((n, len(kinds)))
    since = np.full(n, np.iinfo(np.int64).max)
    for name, h in hits.items():
        w = rules[name].weight
        if not h.hit.any():
            continue
        col = np.searchsorted(kinds, np.where(h.hit, h.suggests, kinds[0]).astype(str))
        np.add.at(by_kind, (np.flatnonzero(h.hit), col[h.hit]), w)
        if w > 0:
            since = np.where(h.hit & (h.first >= 0), np.minimum(since, h.first), since)
    total = by_kind.sum(axis=1)
    top = by_kind.argmax(axis=1) if kinds else np.zeros(n, dtype=np.int64)
    kind = np.where(total > 0, np.asarray(kinds, dtype=object)[top] if kinds else None, None)
    since = np.where(since == np.iinfo(np.int64).max, -1, since)
    return Scores(tuple(kinds), by_kind, total, kind, since)


@dataclass(frozen=True)
class Entry:
    """One worklist line: what (kind), why (rules with evidence), since when, rank in area."""

    meter: int
    area: int
    rank: int
    score: float
    theft_score: float
    kind: str
    since: int
    evidence: dict[str, dict[str, Any]]


def worklist(
    hits: dict[str, RuleHits],
    rules: dict[str, Rule],
    scores: Scores,
    area_of: NDArray[np.int64],
    *,
    min_score: float = 1.0,
) -> list[Entry]:
    """Meters with total score ≥ `min_score`, ranked per area by score (then severity of
    the worst rule, then meter row); the evidence names every rule that hit."""
    n = len(scores.total)
    sev = np.full(n, -1)
    for name, h in hits.items():
        sev = np.where(h.hit, np.maximum(sev, SEVERITIES.index(rules[name].severity)), sev)
    picked = np.flatnonzero(scores.total >= min_score)
    order = np.lexsort((picked, -sev[picked], -scores.total[picked], area_of[picked]))
    picked = picked[order]
    areas = area_of[picked]
    first_of_area = np.r_[True, areas[1:] != areas[:-1]] if len(areas) else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first_of_area, np.arange(len(areas)), 0))
    rank = np.arange(len(areas)) - start + 1
    theft = scores.of("theft")
    out = []
    for i, m in enumerate(picked.tolist()):  # the worklist's rows: few, for the table/API
        ev = {name: _evidence(h, rules[name], m) for name, h in hits.items() if h.hit[m]}
        out.append(
            Entry(
                m,
                int(area_of[m]),
                int(rank[i]),
                float(scores.total[m]),
                float(theft[m]),
                str(scores.kind[m]),
                int(scores.since[m]),
                ev,
            )
        )
    return out


def _evidence(h: RuleHits, rule: Rule, m: int) -> dict[str, Any]:
    ev = {
        "severity": rule.severity,
        "weight": rule.weight,
        "suggests": str(h.suggests[m]),
        "first": int(h.first[m]),
        "intervals": int(h.count[m]),
        "value": _num(h.value[m]),
    }
    ev.update({k: _num(v[m]) for k, v in h.extra.items()})
    return ev


def _num(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None
