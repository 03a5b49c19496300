"""What the meter-error estimate reaches on the world's measured energy (no database): per
area size, register digits and model, the injected errors of bench.accuracy.PCTS on one
public area over 14 days, seeds 1–3. Prints the table of docs/world.md.

    .venv/bin/python -m bench.meter_error_models
"""

from __future__ import annotations

import numpy as np

from analytics.meter_error import estimate_meter_errors
from bench.accuracy import PCTS, START
from simulators.world import Fault, WorldSpec, build_world

MODELS = ("plain", "κE²", "κE²/V²", "drop prior")


def _world(seed: int, meters: int, precise: int | None):
    rng = np.random.default_rng(seed)
    picks = rng.choice(np.arange(1, meters + 1), len(PCTS), replace=False)
    faults = tuple(
        Fault("meter_error", f"f01-a01-c{k:03d}", None, {"pct": p})
        for k, p in zip(picks, PCTS, strict=True)
    )
    spec = WorldSpec(seed=seed, start=START, days=14, feeders=1, areas_per_feeder=1,
                     meters_per_area=meters, faults=faults, precise_decimals=precise)  # fmt: skip
    return build_world(spec)


def _one(world, model: str) -> tuple[int, float, int, float, float]:
    g, t = world.grid, world.truth
    total = g.index("f01-a01-total")
    c = np.flatnonzero((g.role == "customer") & (g.meter_area == 0))
    want = np.zeros(len(c))
    row = {int(i): k for k, i in enumerate(c)}
    for f in t.faults:
        want[row[f.meter]] = f.params["pct"]
    r = estimate_meter_errors(
        t.measured[total], t.measured[c], np.full(len(c), 2.0),
        quantum=(10.0 ** -t.decimals * g.multiplier)[c], service_loss=model != "plain",
        service_voltage=t.voltage[c] if model in ("κE²/V²", "drop prior") else None,
        bus_voltage=t.voltage[total] if model == "drop prior" else None,
    )  # fmt: skip
    ok, inj = ~np.isnan(r.error_pct), want != 0
    miss = np.abs(r.error_pct - want)
    worst = float(np.max(miss[inj & ok])) if (inj & ok).any() else float("nan")
    covers = (r.ci_low <= want) & (want <= r.ci_high)
    cover = float(covers[ok].mean()) if ok.any() else float("nan")
    return int(np.sum(inj & ok & (miss <= 0.5))), worst, int(np.sum(inj & ~ok)), ok.mean(), cover


def main() -> None:
    print("| meters | decimals | model | injected within ±0.5 pp | max miss (pp) |"
          " injected not identifiable | share identifiable | 95 % CI covers |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for meters in (50, 200):
        for precise in (None, 4):
            worlds = [_world(seed, meters, precise) for seed in (1, 2, 3)]
            for model in MODELS:
                got = np.array([_one(w, model) for w in worlds], dtype=float)
                n = len(PCTS) * len(worlds)
                worst = _nan(np.nanmax, got[:, 1])
                cover = _nan(np.nanmean, got[:, 4])
                print(f"| {meters} | {precise or 2} | {model} | {int(got[:, 0].sum())}/{n} |"
                      f" {worst:.2f} | {int(got[:, 2].sum())} | {got[:, 3].mean():.2f} |"
                      f" {cover:.2f} |")  # fmt: skip


def _nan(f, values: np.ndarray) -> float:
    return float("nan") if np.isnan(values).all() else float(f(values))


if __name__ == "__main__":
    main()
