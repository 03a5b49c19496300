"""Abnormal readings against the world's injected faults: precision / recall per fault kind.

`python -m bench.anomalies [--seeds 1 2 3] [--days 14]` builds seeded worlds with faults on
random customers (theft 20–50 % of load, stopped, reverse wiring, wrong multiplier,
misassigned, plus meter errors ±1…5 % and clock drift as distractors), derives what the
*ledger* sees (the inventory's multipliers and areas), runs issue 9's mapping and
multiplier checks and the rules (analytics/anomalies.py) on the arrays, and scores. Per
kind: precision = of the meters the worklist labels with the kind, the share that carry
that fault; recall = of the meters with the fault, the share labelled with it;
precision@1 % = of the top 1 % of meters by that kind's score, the share that carry it.
Exit 1 if a target (≥ 0.9 precision and recall) is missed. Arrays straight from the world
(no database): the rules are measured, not the loaders.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

import numpy as np

from analytics.anomalies import AnomalyInput, evaluate, load_rules, worklist_policy
from analytics.anomaly_score import score, worklist
from analytics.energy import interval_energy
from analytics.mapping import check_meter_areas
from analytics.multiplier_check import multiplier_steps
from simulators.world import Fault, WorldSpec, build_world

TARGET_KINDS = ("theft", "stopped", "reverse_wiring", "wrong_multiplier", "misassigned")
START = datetime(2026, 10, 31, 16, tzinfo=UTC)


def scenario(seed: int, days: int = 14, areas: int = 3, meters: int = 40, feeders: int = 2):
    """A world with faults on random customers from day 3…days−3; the fault list."""
    probe = build_world(_spec(seed, days, areas, meters, feeders, ()))
    g = probe.grid
    rng = np.random.default_rng(1000 + seed)
    cust = np.flatnonzero(g.role == "customer")
    cust = cust[~g.area_dedicated[g.meter_area[cust]]]
    picks = rng.choice(cust, size=min(len(cust), 30), replace=False)
    kinds = ["theft"] * 8 + ["stopped"] * 4 + ["reverse_wiring"] * 4 + ["wrong_multiplier"] * 4
    kinds += ["wrong_area"] * 4 + ["meter_error"] * 4 + ["clock_drift"] * 2
    faults = []
    for i, kind in zip(picks.tolist(), kinds, strict=False):
        start = START + timedelta(days=int(rng.integers(3, days - 3)), hours=int(rng.integers(24)))
        name = g.meters[i]
        params: dict = {}
        if kind == "theft":
            params = {"share": float(rng.uniform(0.2, 0.5))}
        elif kind == "meter_error":
            params = {"pct": float(rng.choice([-5, -3, -2, -1, 1, 2, 3, 5]))}
        elif kind == "clock_drift":
            params = {"seconds_per_day": 60.0}
        elif kind == "wrong_multiplier":
            params = {"ct_ratio": int(g.ct[i]) * int(rng.choice([2, 5]))}
        elif kind == "wrong_area":
            same = [a for a in range(len(g.areas)) if g.area_feeder[a] == g.meter_feeder[i]]
            same = [a for a in same if a != g.meter_area[i] and not g.area_dedicated[a]]
            params = {"area": g.areas[int(rng.choice(same))]}
        faults.append(Fault(kind, name, start, params))
    return build_world(_spec(seed, days, areas, meters, feeders, tuple(faults)))


def _spec(seed, days, areas, meters, feeders, faults) -> WorldSpec:
    return WorldSpec(
        seed=seed, start=START, days=days, feeders=feeders, areas_per_feeder=areas,
        meters_per_area=meters, faults=faults, precise_decimals=4,
    )  # fmt: skip


def ledger_input(world):
    """(AnomalyInput, area_of (n,) ledger area at the end, labels (n,) true fault kind)."""
    g, tr = world.grid, world.truth
    n, T = tr.register.shape[0], tr.register.shape[1] - 1
    mult = np.repeat(g.multiplier[:, None], T, axis=1)
    area_of = np.repeat(g.meter_area[:, None], T, axis=1)
    labels = np.full(n, None, dtype=object)
    changed, ratio = np.full(n, -1), np.full(n, np.nan)
    for f in tr.faults:
        labels[f.meter] = {"wrong_area": "misassigned"}.get(f.kind, f.kind)
        if f.kind == "wrong_multiplier":
            mult[f.meter, f.k :] = f.params["ct_ratio"] * g.pt[f.meter]
            changed[f.meter] = f.k
            ratio[f.meter] = f.params["ct_ratio"] * g.pt[f.meter] / g.multiplier[f.meter]
        elif f.kind == "wrong_area":
            area_of[f.meter, f.k :] = g.areas.index(f.params["area"])
    modulus = np.where(np.isfinite(tr.modulus), tr.modulus, np.inf)
    energy, flags = interval_energy(tr.register, mult, modulus, np.full(n, 1e4))
    export = np.diff(tr.export, axis=1) * mult
    customer = g.role == "customer"
    A = len(g.areas)
    supply, sales = np.zeros((A, T)), np.zeros((A, T))
    cols = np.broadcast_to(np.arange(T), (n, T))
    tot = g.role == "area_total"
    np.add.at(supply, (area_of[tot], cols[tot]), energy[tot])
    np.add.at(sales, (area_of[customer], cols[customer]), energy[customer])
    loss = np.where(g.area_dedicated[:, None], np.nan, supply - sales)
    meter_loss = np.where(area_of >= 0, loss[np.maximum(area_of, 0), cols], np.nan)
    # issue 9's checks on the same arrays
    ref = np.full((A, T), np.nan)
    ref[g.meter_area[tot]] = tr.voltage[tot]
    volts = np.where(customer[:, None], tr.voltage, np.nan)
    mapping = check_meter_areas(volts, ref, area_of[:, -1])
    secondary = np.diff(tr.register, axis=1)
    sign = np.where(customer, -1.0, np.where(tot, 1.0, 0.0))
    steps = multiplier_steps(loss, secondary, np.where(sign[:, None] != 0, mult, np.nan),
                             np.where(sign[:, None] != 0, area_of, -1), sign)  # fmt: skip
    wrong_mult = np.zeros(n, bool)
    wrong_mult[steps.meter[steps.flagged]] = True
    local = (tr.boundaries[:-1] + 8 * 3600) // 86400
    inp = AnomalyInput(
        energy=energy, flags=flags, day_of=local - local[0], export=export,
        voltage=tr.voltage[:, None, :], nominal_v=np.full(n, 220.0),
        consumer=customer, area_loss=np.where(customer[:, None], meter_loss, np.nan),
        misassigned=mapping.flagged & customer, wrong_multiplier=wrong_mult,
        multiplier_change=changed, multiplier_ratio=ratio,
        area_of=np.where(customer, area_of[:, -1], -1),
        bus_voltage=np.where(customer[:, None], ref[area_of, cols], np.nan),
    )  # fmt: skip
    return inp, area_of[:, -1], labels


def measure(seeds, days: int) -> dict[str, dict[str, float]]:
    rules, policy = load_rules(), worklist_policy()
    got = {k: [0, 0, 0] for k in TARGET_KINDS}  # true positives, labelled, real
    at_k = {k: [0, 0] for k in TARGET_KINDS}
    for seed in seeds:
        world = scenario(seed, days)
        inp, area_of, labels = ledger_input(world)
        hits = evaluate(inp, rules)
        sc = score(hits, rules, len(labels))
        listed = {e.meter: e.kind for e in worklist(hits, rules, sc, area_of, **policy)}
        top = max(1, int(np.ceil(0.01 * len(labels))))
        for k in TARGET_KINDS:
            said = np.array([listed.get(m) == k for m in range(len(labels))])
            real = labels == k
            got[k][0] += int((said & real).sum())
            got[k][1] += int(said.sum())
            got[k][2] += int(real.sum())
            order = np.argsort(-sc.of(k), kind="stable")[:top]
            at_k[k][0] += int(real[order].sum())
            at_k[k][1] += top
    out = {}
    for k in TARGET_KINDS:
        tp, said, real = got[k]
        out[k] = {
            "precision": tp / said if said else float("nan"),
            "recall": tp / real if real else float("nan"),
            "precision_at_1pct": at_k[k][0] / at_k[k][1],
            "labelled": said,
            "real": real,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args(argv)
    res = measure(args.seeds, args.days)
    ok = True
    print(f"{'kind':18} {'precision':>9} {'recall':>7} {'p@1%':>6} {'labelled':>8} {'real':>5}")
    for k, r in res.items():
        print(f"{k:18} {r['precision']:9.3f} {r['recall']:7.3f} {r['precision_at_1pct']:6.3f}"
              f" {r['labelled']:8d} {r['real']:5d}")  # fmt: skip
        ok &= r["precision"] >= 0.9 and r["recall"] >= 0.9
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
