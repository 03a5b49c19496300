"""Abnormal readings against the simulated world's injected faults (ground truth): the
rules, score and worklist on what the ledger sees (bench/anomalies.py builds the worlds:
faults on random customers from day 3 on, plus meter errors and clock drift as distractors).

Targets of issue 10: precision and recall ≥ 0.9 per fault kind, theft (20–50 % of the load)
included: its small households are found by the service line's voltage drop per registered
kWh (voltage_drop_step), which the area's other faults do not blur."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from analytics.anomaly_job import AnomalyPolicy, run_anomalies
from analytics.diagnostics import DiagnosticsPolicy, run_diagnostics
from analytics.jobs import run_lineloss
from analytics.store import AnalyticsStore
from bench.accuracy import POLICY, anomaly_rows
from bench.anomalies import measure, scenario
from bench.world_db import store_world
from ingest.schema import ensure_partitions


@pytest.fixture(scope="module")
def result():
    return measure([1, 2], days=14)


@pytest.mark.parametrize("kind", ["stopped", "reverse_wiring", "wrong_multiplier", "misassigned"])
def test_kinds_at_target(result, kind):
    r = result[kind]
    assert r["real"] == 8  # 4 per world
    assert r["precision"] >= 0.9 and r["recall"] >= 0.9, r
    assert r["precision_at_1pct"] >= 0.9, r


def test_theft_at_target(result):
    r = result["theft"]
    assert r["real"] == 16  # 8 per world
    assert r["precision"] >= 0.9 and r["recall"] >= 0.9, r
    assert r["precision_at_1pct"] >= 0.9, r


def test_the_job_through_postgresql_finds_the_worlds_faults(migrated_url):
    # one feeder × 3 areas × 40 customers, 8 days, stored through the real writer (registers
    # and voltages; the reverse-wired meters' export register added, which store_world does
    # not carry); the line-loss job, the diagnostics and the anomalies job as in `gridread run`
    days = 8
    world = scenario(3, days=days, areas=3, meters=40, feeders=1)
    ids = store_world(migrated_url, world)
    g, tr = world.grid, world.truth
    truth = {}
    for f in tr.faults:
        truth[g.meters[f.meter]] = {"wrong_area": "misassigned"}.get(f.kind, f.kind)
    end = world.spec.start + timedelta(days=days)
    now = end + timedelta(seconds=POLICY.settle_s + 1)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        rows = []
        for f in tr.faults:
            if f.kind == "reverse_wiring":
                for k, t in enumerate(tr.boundaries.tolist()):
                    rows.append((ids[g.meters[f.meter]], t, float(tr.export[f.meter, k])))
        ensure_partitions(
            conn, {world.spec.start.date() + timedelta(days=d) for d in range(-1, days + 2)}
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (device_id, quantity, ts, value)"
                " VALUES (%s, '2.8.0', to_timestamp(%s), %s)",
                rows,
            )
        store = AnalyticsStore(conn)
        run_lineloss(store, POLICY, now)
        run_diagnostics(store, DiagnosticsPolicy(lineloss=POLICY, days=days), now)
        assert run_anomalies(store, AnomalyPolicy.from_file(POLICY, days=days), now) > 0
        cases = conn.execute(
            "SELECT d.name, c.kind FROM anomaly_cases c JOIN devices d ON d.id = c.device_id"
        ).fetchall()
    said: dict[str, set[str]] = {}
    for name, kind in cases:
        said.setdefault(name, set()).add(kind)
    for kind in ("theft", "stopped", "reverse_wiring", "wrong_multiplier", "misassigned"):
        real = {m for m, k in truth.items() if k == kind}
        labelled = {m for m, ks in said.items() if kind in ks}
        assert real, kind
        found = len(real & labelled) / len(real)
        precise = len(real & labelled) / max(len(labelled), 1)
        # theft: 8 days only; 7 of its 8 found as on the arrays (bench.anomalies on this world:
        # the eighth, 26 % from day 4, has a voltage-drop step z of 5.8 < 6), one extra case
        bar = 0.85 if kind == "theft" else 0.9
        assert found >= bar and precise >= bar, (kind, real, labelled)


def test_bench_accuracy_reports_the_anomaly_figures_with_honest_targets(result):
    # bench/accuracy.py's rows from the same measurement: precision and recall against ≥ 0.9
    # (ok exactly when the figure reaches it), precision@1 % reported without a target
    rows = anomaly_rows(result, "seeds 1–2")
    assert len(rows) == 3 * len(result)
    for r in rows:
        kind, figure = r.figure.rsplit(" ", 1)
        want = result[kind][{"precision@1%": "precision_at_1pct"}.get(figure, figure)]
        assert r.value == want
        assert r.ok is (None if figure == "precision@1%" else want >= 0.9)
    theft = {r.figure: r for r in rows if r.figure.startswith("theft ")}
    assert theft["theft recall"].ok is (result["theft"]["recall"] >= 0.9)
