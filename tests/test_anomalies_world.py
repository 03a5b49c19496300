"""Abnormal readings against the simulated world's injected faults (ground truth): the
rules, score and worklist on what the ledger sees (bench/anomalies.py builds the worlds:
faults on random customers from day 3 on, plus meter errors and clock drift as distractors).

Targets of issue 10: precision and recall ≥ 0.9 per fault kind. Met here for stopped meters,
reverse wiring, wrong multiplier and misassigned meters; theft (20–50 % of the load) is
checked at its precision target and at the recall it reaches (docs/analytics.md,
"Abnormal readings": households whose stolen share is a few tens of Wh per interval stay
below what the area's balance resolves), so that a regression shows."""

from __future__ import annotations

import pytest

from bench.anomalies import measure


@pytest.fixture(scope="module")
def result():
    return measure([1, 2], days=14)


@pytest.mark.parametrize("kind", ["stopped", "reverse_wiring", "wrong_multiplier", "misassigned"])
def test_kinds_at_target(result, kind):
    r = result[kind]
    assert r["real"] == 8  # 4 per world
    assert r["precision"] >= 0.9 and r["recall"] >= 0.9, r
    assert r["precision_at_1pct"] >= 0.9, r


def test_theft_precision_at_target_recall_as_measured(result):
    r = result["theft"]
    assert r["real"] == 16
    assert r["precision"] >= 0.9, r
    assert r["recall"] >= 0.7, r  # target 0.9: missed (see the module docstring)
