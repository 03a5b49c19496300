"""Accuracy against the world's ground truth (issue 9, "Accuracy").

Builds seeded worlds (`simulators/world/`), stores their registers and voltages as readings
through the real ReadingWriter into PostgreSQL (embedded unless GRIDREAD_BENCH_DATABASE_URL),
then runs gridread's jobs on them — the line-loss job, the daily diagnostics (meter-to-area,
wrong multiplier) — and the meter-error estimate on arrays loaded by `analytics/store.py`, and
sets each result against the truth; then the abnormal-reading rules' precision, recall and
precision@1 % per fault kind (bench/anomalies.py) on the tuning and the held-out seeds.
Prints a table; exits 1 if any target is missed.

    .venv/bin/python -m bench.accuracy            # the issue's sizes (areas of 50 and 200)
    .venv/bin/python -m bench.accuracy --quick    # small worlds, for a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from analytics.diagnostics import DiagnosticsPolicy, bus_voltage, run_diagnostics
from analytics.energy import align_registers, interval_energy
from analytics.jobs import LineLossPolicy, area_groups, run_lineloss
from analytics.meter_error import estimate_meter_errors
from analytics.store import AnalyticsStore, Grid
from bench._common import bench_database
from bench.anomalies import TARGET_KINDS
from bench.anomalies import measure as measure_anomalies
from bench.world_db import TIMEZONE, inventory_loss, store_world
from simulators.world import Fault, WorldSpec, build_world
from simulators.world.world import World

START = datetime(2026, 10, 31, 16, tzinfo=UTC)  # local midnight, 1 November
PCTS = (-5.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 5.0)  # injected meter errors per area
POLICY = LineLossPolicy(timezone=TIMEZONE)


@dataclass
class Row:
    check: str
    figure: str
    value: float
    target: str
    ok: bool | None  # None: reported, no target


def error_world(seed: int, areas: int, meters: int, days: int) -> World:
    """Public areas of `meters` customers, each with the eight injected errors of PCTS."""
    rng = np.random.default_rng(seed)
    faults = []
    for a in range(areas):
        picks = rng.choice(np.arange(1, meters + 1), len(PCTS), replace=False)
        faults += [
            Fault("meter_error", f"f01-a{a + 1:02d}-c{k:03d}", None, {"pct": p})
            for k, p in zip(picks, PCTS, strict=True)
        ]
    spec = WorldSpec(seed=seed, start=START, days=days, feeders=1, areas_per_feeder=areas,
                     meters_per_area=meters, faults=tuple(faults), precise_decimals=4)  # fmt: skip
    return build_world(spec)


def fault_world(seed: int, feeders: int, areas: int, meters: int, days: int, moved: int) -> World:
    """`moved` customers placed in a wrong area by the inventory (from the start), and one
    customer behind a CT whose ledger CT doubles half-way (the field CT did not change)."""
    base = WorldSpec(seed=seed, start=START, days=days, feeders=feeders, precise_decimals=4,
                     areas_per_feeder=areas, meters_per_area=meters)  # fmt: skip
    g = build_world(base).grid
    rng = np.random.default_rng(seed)
    public = [a for a, d in zip(g.areas, g.area_dedicated, strict=True) if not d]
    customers = np.flatnonzero(g.role == "customer")
    ct = [i for i in customers if g.ct[i] > 1]
    suspect = int(ct[0]) if ct else int(customers[0])
    faults = [Fault("wrong_multiplier", g.meters[suspect], START + timedelta(days=days // 2),
                    {"ct_ratio": int(g.ct[suspect]) * 2})]  # fmt: skip
    others = [i for i in customers if g.meter_area[i] != g.meter_area[suspect]]
    for i in rng.choice(others, moved, replace=False):
        own = g.areas[g.meter_area[i]]
        wrong = rng.choice([a for a in public if a != own])
        faults.append(Fault("wrong_area", g.meters[i], None, {"area": str(wrong)}))
    return build_world(replace(base, faults=tuple(faults)))


def lineloss_rows(url: str, world: World, label: str, drop: dict) -> list[Row]:
    """The line-loss job's 15-min area and feeder results against the truth."""
    b = world.truth.boundaries
    with psycopg.connect(url, autocommit=True) as conn:
        run_lineloss(AnalyticsStore(conn), POLICY, _utc(b[-1]) + timedelta(hours=1))
        rows = conn.execute(
            "SELECT level, name, extract(epoch FROM start)::int8, supply, loss, coverage,"
            " status FROM lineloss WHERE period = '15min' AND level IN ('area', 'feeder')"
        ).fetchall()
    truth = inventory_loss(world)
    cov_truth = _coverage(world, drop)
    worst, wrong_cov, wrong_status, n_complete, n_missing = 0.0, 0, 0, 0, 0
    for level, name, start, supply, loss, coverage, status in rows:
        k = int(np.searchsorted(b, start))
        if k >= len(b) - 1 or b[k] != start or name not in truth[level]:
            continue
        want = cov_truth.get((level, name), np.ones(len(b) - 1))[k]
        wrong_cov += abs(coverage - want) > 1e-12
        if want < 1.0:
            n_missing += 1
            wrong_status += status != "not_computable" or loss is not None
            continue
        n_complete += 1
        wrong_status += status == "not_computable"
        if loss is not None:
            worst = max(worst, abs(loss - truth[level][name][k]) / abs(supply))
    expected = sum(len(v) for v in truth.values()) * (len(b) - 1)
    return [
        Row(f"line loss {label}", "max |loss − truth| / supply (complete)", worst, "≤ 1e-9",
            worst <= 1e-9 and n_complete > 0),
        Row(f"line loss {label}", "results (group × 15 min) found", n_complete + n_missing,
            f"= {expected}", n_complete + n_missing == expected),
        Row(f"line loss {label}", "coverage ≠ truth", wrong_cov, "= 0", wrong_cov == 0),
        Row(f"line loss {label}", "intervals with a gap: 不可算 exactly there", n_missing,
            f"{wrong_status} wrong", wrong_status == 0),
    ]  # fmt: skip


def _coverage(world: World, drop: dict) -> dict[tuple[str, str], np.ndarray]:
    """(level, group) → coverage per interval when the `drop` boundaries are not stored
    (both intervals around a missing register are missing); groups as the inventory says."""
    T = world.truth.energy.shape[1]
    inv = world.inventory(area_totals="local")
    placed = {row["meter"]: row for row in inv["metering_point"]}
    members: dict[tuple[str, str], list[str]] = {}
    area_feeder = {a["name"]: a["feeder"] for a in inv["area"]}
    for meter, row in placed.items():
        if row["role"] == "feeder_head":
            members.setdefault(("feeder", row["feeder"]), []).append(meter)
            continue
        members.setdefault(("area", row["area"]), []).append(meter)
        if row["role"] == "area_total":
            members.setdefault(("feeder", area_feeder[row["area"]]), []).append(meter)
    out = {}
    for key, names in members.items():
        present = np.ones((len(names), T))
        for j, name in enumerate(names):
            if name in drop:
                k0, k1 = drop[name]
                present[j, max(k0 - 1, 0) : min(k1, T)] = 0
        out[key] = present.mean(axis=0)
    return out


def meter_error_rows(url: str, world: World, label: str) -> list[Row]:
    """Meter errors per public area from the stored registers and voltages (loaded by the
    analytics store), with each meter's own service-line loss (its prior from the meter's
    voltage drop); against the injected ones."""
    g, t = world.grid, world.truth
    b = t.boundaries
    with psycopg.connect(url, autocommit=True) as conn:
        store = AnalyticsStore(conn)
        topo = store.topology(Grid(int(b[0]), 900, len(b) - 1))
        n = len(topo.device_ids)
        regs = store.registers(topo, POLICY.align_tolerance_s)
        idx, ts, value = store.readings(topo.device_ids, int(b[0]), int(b[-1]), "32.7.0")
    volts = align_registers(idx, ts, value, n, int(b[0]), 900, len(b) - 1, 0)
    energy, _ = interval_energy(regs, topo.multiplier, np.full(n, 1e6), np.full(n, 1e4))
    groups = area_groups(topo, energy)
    bus = bus_voltage(topo, groups.names, volts)  # each area total's 32.7.0
    injected = {f.meter: f.params["pct"] for f in t.faults if f.kind == "meter_error"}
    world_row = [g.index(name) for name in topo.device_names]
    quantum = 10.0 ** -t.decimals[world_row] * g.multiplier[world_row]
    errs, truth_pct, lows, highs = [], [], [], []
    start = time.perf_counter()
    for a, _name in enumerate(groups.names):  # one least-squares problem per area
        idx_a = np.flatnonzero((groups.group_of == a).any(axis=1))
        r = estimate_meter_errors(
            groups.supply[a], energy[idx_a], np.full(len(idx_a), 2.0), quantum=quantum[idx_a],
            service_loss=True, service_voltage=volts[idx_a], bus_voltage=bus[a],
        )  # fmt: skip
        errs.append(r.error_pct)
        lows.append(r.ci_low)
        highs.append(r.ci_high)
        truth_pct.append([injected.get(world_row[i], 0.0) for i in idx_a])
    seconds = time.perf_counter() - start
    err, want = np.concatenate(errs), np.concatenate(truth_pct)
    lo, hi = np.concatenate(lows), np.concatenate(highs)
    ident = ~np.isnan(err)
    inj = want != 0
    miss = np.abs(err - want)
    within = np.sum(inj & ident & (miss <= 0.5)) / inj.sum()
    within_all = np.sum(ident & (miss <= 0.5)) / len(err)
    cover = np.mean((lo[ident] <= want[ident]) & (want[ident] <= hi[ident]))
    return [
        Row(f"meter error {label}", "injected ±1…5 % within ±0.5 pp", within, "= 1",
            within == 1.0),
        Row(f"meter error {label}", "injected: max |error| (pp, identifiable)",
            float(np.nanmax(np.where(inj, miss, np.nan))), "≤ 0.5", None),
        Row(f"meter error {label}", "injected: not identifiable", int(np.sum(inj & ~ident)),
            f"of {int(inj.sum())}", None),
        Row(f"meter error {label}", "all meters: within ±0.5 pp", within_all, "", None),
        Row(f"meter error {label}", "all meters: not identifiable", int(np.sum(~ident)),
            f"of {len(err)}", None),
        Row(f"meter error {label}", "95 % CI covers the truth", cover, "≥ 0.9", cover >= 0.9),
        Row(f"meter error {label}", "estimate seconds (all areas)", seconds, "", None),
    ]  # fmt: skip


def diagnostics_rows(url: str, world: World, label: str) -> list[Row]:
    """The daily diagnostics job: meter-to-area flags and the wrong-multiplier check."""
    g, t = world.grid, world.truth
    b = t.boundaries
    policy = DiagnosticsPolicy(lineloss=POLICY, days=world.spec.days)
    with psycopg.connect(url, autocommit=True) as conn:
        run_diagnostics(AnalyticsStore(conn), policy, _utc(b[-1]) + timedelta(hours=1))
        mapping = conn.execute(
            "SELECT d.name, f.best_area, f.flagged FROM mapping_flags f"
            " JOIN devices d ON d.id = f.device_id"
        ).fetchall()
        mult = conn.execute(
            "SELECT d.name, f.check_kind, f.expected_jump, f.observed_jump, f.flagged"
            " FROM multiplier_flags f JOIN devices d ON d.id = f.device_id"
        ).fetchall()
        job_errors = conn.execute(
            "SELECT d.name, e.error_pct FROM meter_errors e JOIN devices d ON d.id = e.device_id"
        ).fetchall()
    moved = {g.meters[f.meter]: g.areas[g.meter_area[f.meter]] for f in t.faults
             if f.kind == "wrong_area"}  # fmt: skip
    found = sum(1 for m, best, fl in mapping if m in moved and fl and best == moved[m])
    false = sum(1 for m, _, fl in mapping if m not in moved and fl)
    checked = sum(1 for m, _, _ in mapping if m not in moved)
    rows = []
    if moved:
        rows += [
            Row(f"mapping {label}", "misassigned found (right area named)", found / len(moved),
                "≥ 0.95", found / len(moved) >= 0.95),
            Row(f"mapping {label}", "correctly assigned flagged", false / max(checked, 1),
                "≤ 0.01", false / max(checked, 1) <= 0.01),
        ]  # fmt: skip
    injected = {g.meters[f.meter]: f.params["pct"] for f in t.faults if f.kind == "meter_error"}
    if injected:  # the job's own estimate (its model and settings), as stored
        got = {m: e for m, e in job_errors if m in injected}
        within = sum(1 for m, e in got.items() if e is not None and abs(e - injected[m]) <= 0.5)
        share = within / len(injected)
        rows.append(Row(f"meter error {label}", "diagnostics job: injected within ±0.5 pp",
                        share, "= 1", share == 1.0))  # fmt: skip
    suspects = {g.meters[f.meter]: f for f in t.faults if f.kind == "wrong_multiplier"}
    flagged = {m for m, _, _, _, fl in mult if fl}
    if suspects:
        [name] = suspects
        sig = next(r for r in t.fault_records() if r["kind"] == "wrong_multiplier")
        expect = sig["signature"][0]["mean_delta_kwh"]
        step = [r for r in mult if r[0] == name and r[1] == "step"]
        observed = step[0][3] if step else float("nan")
        rel = abs(observed - expect) / abs(expect)
        rows += [
            Row(f"multiplier {label}", f"loss jump observed / expected ({expect:+.2f} kWh)",
                observed / expect, "1 ± 0.2", rel <= 0.2),
            Row(f"multiplier {label}", "flag names the suspect meter", float(name in flagged),
                "= 1", name in flagged),
            Row(f"multiplier {label}", "other meters flagged", len(flagged - {name}), "= 0",
                not flagged - {name}),
        ]  # fmt: skip
    return rows


def anomaly_rows(result: dict[str, dict[str, float]], label: str) -> list[Row]:
    """bench.anomalies' measurement as rows: precision and recall per fault kind against
    the issue's ≥ 0.9; precision@top-1 % reported (the issue sets no target for it)."""
    rows = []
    for kind in TARGET_KINDS:
        r = result[kind]
        for figure in ("precision", "recall"):
            v = float(r[figure])
            rows.append(Row(f"anomalies {label}", f"{kind} {figure}", v, "≥ 0.9", v >= 0.9))
        v = float(r["precision_at_1pct"])
        rows.append(Row(f"anomalies {label}", f"{kind} precision@1%", v, "", None))
    return rows


def _utc(t) -> datetime:
    return datetime.fromtimestamp(int(t), UTC)


def run_world(world: World, label: str, drop: dict | None = None, *, errors: bool) -> list[Row]:
    with bench_database() as url:
        t0 = time.perf_counter()
        store_world(url, world, drop)
        rows = [Row(f"store {label}", "seconds to store", time.perf_counter() - t0, "", None)]
        rows += lineloss_rows(url, world, label, drop or {})
        if errors:
            rows += meter_error_rows(url, world, label)
        rows += diagnostics_rows(url, world, label)
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.check) for r in rows), max(len(r.figure) for r in rows)
    for r in rows:
        mark = "" if r.ok is None else ("ok" if r.ok else "MISSED")
        value = f"{r.value:.3g}" if isinstance(r.value, float | np.floating) else str(r.value)
        print(f"{r.check:<{width[0]}}  {r.figure:<{width[1]}}  {value:>10}  {r.target:<10} {mark}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small worlds (a smoke run)")
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args(argv)
    days = args.days
    sizes = (20, 40) if args.quick else (50, 200)
    rows: list[Row] = []
    for meters in sizes:
        rows += run_world(error_world(40 + meters, 2, meters, days), f"{meters}/area",
                          errors=True)  # fmt: skip
    faults = fault_world(31, 2, 3, 20 if args.quick else 40, days, moved=8)
    g = faults.grid
    customer = g.meters[int(np.flatnonzero(g.role == "customer")[1])]
    drop = {customer: (96, 192), "f01-a02-total": (300, 308)}  # a day; two hours
    rows += run_world(faults, "faults", drop, errors=False)
    # the abnormal-reading rules: seeds 1–6 set the theft thresholds, 7–12 are held out
    tuned, held_out = ((1, 2), (7, 8)) if args.quick else ((1, 2, 3, 4, 5, 6), tuple(range(7, 13)))
    for seeds, name in ((tuned, "tuned"), (held_out, "held out")):
        label = f"seeds {seeds[0]}–{seeds[-1]} ({name})"
        rows += anomaly_rows(measure_anomalies(seeds, days), label)
    print_table(rows)
    missed = [r for r in rows if r.ok is not None and not r.ok]
    print(f"{len(missed)} target(s) missed" if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
