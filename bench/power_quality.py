"""Power quality core on a day of data: gridread's numpy functions (analytics/power_quality.py)
on generated voltages, each timed alone (best of `--repeat`) against numpy's floor for the
same arrays: one pass of the two limit comparisons and a row sum (qualification), the plain
deviation formula (unbalance), a plain reshape-mean (10-min means).

* meters: M meters × 3 phases × 96 15-min voltages (1 % missing): `qualification` per row and
  `combine` into areas of 100 meters; `unbalance` of the three phases, by negative sequence
  (angles known) and by max deviation;
* monitors: K monitors × 1440 one-minute voltages: `qualification`, `ten_minute_means`,
  `weekly_compliance` of the day's means, `composite_rate` over classes A–D.

    python bench/power_quality.py [--meters 100000] [--monitors 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics import power_quality as pq


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--monitors", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    M, K = a.meters, a.monitors

    v3 = rng.normal(225.0, 8.0, (M, 96, 3))
    v3[rng.random(v3.shape) < 0.01] = np.nan
    rows = v3.transpose(0, 2, 1).reshape(3 * M, 96)
    ones = np.ones(3 * M)
    day = np.zeros(96, dtype=np.int64)
    area = np.repeat(np.arange(M // 100 + 1), 300)[: 3 * M]
    angles = np.broadcast_to(np.array([0.0, -120.0, 120.0]), v3.shape)
    q = pq.qualification(rows, 220 * ones, 7 * ones, -10 * ones, day, 1, 900)

    vm = rng.normal(222.0, 9.0, (K, 1440))
    mones = np.ones(K)
    minute = np.zeros(1440, dtype=np.int64)
    qm = pq.qualification(vm, 220 * mones, 7 * mones, -10 * mones, minute, 1, 60)
    means = pq.ten_minute_means(vm, 60)
    cls = rng.integers(0, 4, K)

    def floor_q(x):
        return ((x > 235.4) | (x < 198.0)).sum(axis=1)

    def floor_u(x):
        return np.abs(x - x.mean(axis=-1, keepdims=True)).max(axis=-1)

    results = [
        (f"qualification {3 * M:,} meter phases × 96", lambda: pq.qualification(
            rows, 220 * ones, 7 * ones, -10 * ones, day, 1, 900), lambda: floor_q(rows)),
        (f"combine into {M // 100:,} areas", lambda: pq.combine(q, area, M // 100 + 1), None),
        (f"unbalance, negative sequence, {M:,} × 96", lambda: pq.unbalance(v3, angles),
         lambda: floor_u(v3)),
        (f"unbalance, max deviation, {M:,} × 96", lambda: pq.unbalance(v3), lambda: floor_u(v3)),
        (f"qualification {K:,} monitors × 1440", lambda: pq.qualification(
            vm, 220 * mones, 7 * mones, -10 * mones, minute, 1, 60), lambda: floor_q(vm)),
        ("ten-minute means", lambda: pq.ten_minute_means(vm, 60),
         lambda: vm.reshape(K, 144, 10).mean(axis=2)),
        ("weekly compliance (one day's means)", lambda: pq.weekly_compliance(
            means, np.zeros(144, dtype=np.int64), 1, (198 * mones, 242 * mones),
            (187 * mones, 242 * mones)), None),
        ("composite rate", lambda: pq.composite_rate(qm, cls, np.array([0.5, 1, 1, 1]) / 2),
         None),
    ]  # fmt: skip
    print(f"{'':<48} {'gridread':>10} {'floor':>10} {'ratio':>7}")
    for name, fn, floor in results:
        t = best(fn, a.repeat)
        if floor is None:
            print(f"{name:<48} {t * 1000:8.1f}ms")
            continue
        f = best(floor, a.repeat)
        print(f"{name:<48} {t * 1000:8.1f}ms {f * 1000:8.1f}ms {t / f:6.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
