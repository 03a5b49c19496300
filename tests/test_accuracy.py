"""Accuracy against the world's ground truth, on small worlds (the same checks as
bench/accuracy.py, which runs them at the issue's sizes): a world's registers and voltages
stored through the real ReadingWriter into PostgreSQL, the real jobs run on them."""

from dataclasses import replace
from datetime import timedelta

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.diagnostics import DiagnosticsPolicy, run_diagnostics
from analytics.store import AnalyticsStore
from api.app import create_app
from bench.accuracy import (
    POLICY,
    START,
    diagnostics_rows,
    error_world,
    fault_world,
    lineloss_rows,
    meter_error_rows,
)
from bench.world_db import TIMEZONE, store_world
from simulators.world import Fault, WorldSpec, build_world
from tests.api_auth import credentials


def _check(rows, figure):
    [row] = [r for r in rows if r.figure.startswith(figure)]
    assert row.ok, (row.check, row.figure, row.value, row.target)
    return row.value


def test_line_loss_mapping_and_wrong_multiplier_against_the_truth(migrated_url):
    # 1 feeder × 3 areas × 20 customers, 7 days: 6 customers placed in a wrong area by the
    # inventory, one CT customer whose ledger CT doubles half-way; one customer silent for a
    # day, an area total for two hours
    w = fault_world(31, 1, 3, 20, 7, moved=6)
    g = w.grid
    customer = g.meters[int(np.flatnonzero(g.role == "customer")[1])]
    drop = {customer: (96, 192), "f01-a02-total": (300, 308)}
    store_world(migrated_url, w, drop)

    rows = lineloss_rows(migrated_url, w, "small", drop)
    assert _check(rows, "max |loss − truth|") <= 1e-9
    assert _check(rows, "results (group × 15 min)") == 4 * 7 * 96  # 3 areas + 1 feeder
    assert _check(rows, "coverage ≠ truth") == 0
    # the silent customer: 97 intervals of its area (a missing register spoils the interval
    # on either side); the total: 9 of its area and the same 9 of the feeder, whose member it
    # is — all 不可算, and nothing else
    assert _check(rows, "intervals with a gap") == 97 + 9 + 9

    rows = diagnostics_rows(migrated_url, w, "small")
    assert _check(rows, "misassigned found") >= 0.95
    assert _check(rows, "correctly assigned flagged") <= 0.01
    assert _check(rows, "loss jump observed / expected") == pytest.approx(1.0, abs=0.2)
    assert _check(rows, "flag names the suspect meter") == 1.0
    assert _check(rows, "other meters flagged") == 0

    [suspect] = [g.meters[f.meter] for f in w.truth.faults if f.kind == "wrong_multiplier"]
    with TestClient(
        create_app(migrated_url, timezone=TIMEZONE), headers=credentials(migrated_url, "viewer")
    ) as client:
        r = client.get("/analytics/multiplier-flags")
        assert r.status_code == 200, r.text
        [flag] = r.json()
        assert (flag["meter"], flag["check_kind"]) == (suspect, "step")
        assert flag["multiplier_after"] == 2 * flag["multiplier_before"]
        assert flag["observed_jump"] == pytest.approx(flag["expected_jump"], rel=0.2)
        assert flag["at"].startswith(str((w.spec.start + timedelta(days=3)).date()))


def test_meter_errors_recovered_from_the_database(migrated_url):
    # 2 areas × 20 customers, 14 days, ±1…5 % on eight customers of each; 4-decimal registers
    w = error_world(60, 2, 20, 14)
    store_world(migrated_url, w)
    rows = meter_error_rows(migrated_url, w, "small")
    assert _check(rows, "injected ±1…5 % within ±0.5 pp") == 1.0
    assert _check(rows, "95 % CI covers the truth") >= 0.9
    rows = diagnostics_rows(migrated_url, w, "small")  # the daily job, as it stores them
    assert _check(rows, "diagnostics job: injected within ±0.5 pp") == 1.0
    with psycopg.connect(migrated_url) as conn:  # what was estimated came from the database
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] > 40 * 1345


def test_a_multiplier_wrong_all_along_shows_as_an_implausible_meter_error(migrated_url):
    # the ledger's CT is twice the field's for the whole fortnight: no change to step at,
    # but the meter-error estimate reads (2 − 1)·100 = +100 %, which names the meter and
    # implies the field's multiplier, ledger / (1 + 100/100)
    base = WorldSpec(seed=31, start=START, days=14, feeders=1, areas_per_feeder=2,
                     meters_per_area=20, precise_decimals=4)  # fmt: skip
    g = build_world(base).grid
    i = next(i for i in np.flatnonzero(g.role == "customer") if g.ct[i] > 1)
    wrong = Fault("wrong_multiplier", g.meters[i], None, {"ct_ratio": int(g.ct[i]) * 2})
    w = build_world(replace(base, faults=(wrong,)))
    store_world(migrated_url, w)
    now = w.spec.start + timedelta(days=14, hours=1)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        run_diagnostics(AnalyticsStore(conn), DiagnosticsPolicy(lineloss=POLICY), now)
        flags = conn.execute(
            "SELECT d.name, check_kind, multiplier_after, error_pct, implied_multiplier"
            " FROM multiplier_flags f JOIN devices d ON d.id = f.device_id WHERE flagged"
        ).fetchall()
    [(name, kind, ledger, err, implied)] = flags
    assert (name, kind, ledger) == (g.meters[i], "factor", 2.0 * g.ct[i])
    assert err == pytest.approx(100.0, abs=1.0)
    assert implied == pytest.approx(g.ct[i], rel=0.01)
