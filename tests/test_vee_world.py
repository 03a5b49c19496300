"""VEE against the simulated grid's ground truth: the world's measured registers (0.01 kWh
digits) of 28 local days; the first 21 complete are the history of the same-day-type profile,
in the last 7 gaps are punched (short ones, long ones, missing frozen registers). The
estimates are compared with the registers the world really showed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from analytics.vee import Method, Rule, VeePolicy
from analytics.vee_estimate import day_type_profile
from analytics.vee_pipeline import run_vee_block
from simulators.world import WorldSpec, build_world

PER_DAY = 96
START = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 Asia/Shanghai, a Sunday
H = 21  # history days


def punched(seed: int = 3):
    w = build_world(WorldSpec(seed=seed, start=START, days=H + 7, areas_per_feeder=2))
    truth = w.truth.register  # (n, (H + 7)·96 + 1) secondary, what the meters showed
    n = truth.shape[0]
    hist_energy = np.diff(truth[:, : H * PER_DAY + 1], axis=1).reshape(n, H, PER_DAY)
    week = truth[:, H * PER_DAY :]
    rng = np.random.default_rng(seed)
    reg = week.copy()
    kind = np.zeros(reg.shape, dtype=np.int8)  # 1: short gap, 2: long gap
    for i in range(n):  # set-up only: one gap of each length per meter
        a = rng.integers(1, 7 * PER_DAY - 60)
        reg[i, a : a + rng.integers(1, 5)] = np.nan
        kind[i, np.isnan(reg[i])] = 1
        b = a + 10 + rng.integers(0, 8)
        long = rng.integers(12, 41)
        reg[i, b : b + long] = np.nan
        kind[i, b : b + long] = 2
    frozen = week[:, ::PER_DAY].copy()
    frozen[rng.random(frozen.shape) < 0.1] = np.nan
    return truth, hist_energy, week, reg, kind, frozen


def test_estimates_against_truth():
    _, hist, week, reg, kind, frozen = punched()
    n = reg.shape[0]
    days = np.array([d % 7 in (0, 6) for d in range(H + 7)], dtype=np.int8)  # Sun, Sat
    profile = day_type_profile(hist, days[:H], days[H:])
    policy = VeePolicy(max_linear_gap=4)
    r = run_vee_block(reg, np.zeros(reg.shape, np.int16), np.full(n, 1e4), frozen,
                      np.zeros(frozen.shape, np.int16), per_day=PER_DAY, profile=profile,
                      policy=policy)  # fmt: skip
    true_e = np.diff(week, axis=1)
    # every gap here is closed (registers known on both sides): all estimated, all valid;
    # the energy of every day whose midnights are known (read or frozen) equals the true
    # register delta, and so does the week's (sums exact where complete)
    assert r.valid.all() and r.frozen_valid.all()
    day_sum = r.energy.reshape(n, 7, PER_DAY).sum(axis=2)
    known = np.isfinite(reg[:, ::PER_DAY]) | np.isfinite(frozen)
    both = known[:, :-1] & known[:, 1:]
    assert both.mean() > 0.9
    true_day = np.diff(week[:, ::PER_DAY], axis=1)
    np.testing.assert_allclose(day_sum[both], true_day[both], atol=1e-9)
    np.testing.assert_allclose(r.energy.sum(axis=1), week[:, -1] - week[:, 0], atol=1e-8)
    # the missing frozen registers are the profile's at midnight, and that is the truth
    # where the midnight register was read; else an estimate within the gap's energy
    missing = np.isnan(frozen)
    read = missing & np.isfinite(reg[:, ::PER_DAY])
    np.testing.assert_allclose(r.frozen[read], week[:, ::PER_DAY][read])
    assert (r.frozen_method[missing] == Method.ESTIMATED).all()

    # the error of the estimated intervals against the truth, by kind of gap; the
    # same-day-type profile must beat a flat (linear) fill of the same long gaps
    est = r.method == Method.ESTIMATED
    around = np.zeros_like(kind, dtype=bool)  # intervals touching a punched register
    around[:, 1:] |= kind[:, 1:] == 2
    long_i = around[:, :-1] | (kind[:, :-1] == 2)
    long_i &= (r.rules & int(Rule.PROFILE)) != 0
    assert long_i.sum() > n * 12
    err = np.abs(r.energy - true_e)
    lin = run_vee_block(reg, np.zeros(reg.shape, np.int16), np.full(n, 1e4), frozen,
                        np.zeros(frozen.shape, np.int16), per_day=PER_DAY,
                        policy=policy)  # fmt: skip
    err_lin = np.abs(lin.energy - true_e)
    mean_load = np.mean(true_e)
    mae_profile = err[long_i].mean() / mean_load
    mae_flat = err_lin[long_i].mean() / mean_load
    short_i = est & ~long_i & ((r.rules & int(Rule.LINEAR)) != 0)
    mae_short = err[short_i].mean() / mean_load
    print(
        f"\nVEE vs truth ({n} meters, 7 days): short gaps (linear) MAE {mae_short:.1%} of the"
        f" mean interval; long gaps: profile {mae_profile:.1%}, flat fill {mae_flat:.1%}"
    )
    assert mae_profile < mae_flat
    assert (r.method[~est] == Method.ACTUAL).all()
    np.testing.assert_array_equal(r.energy[~est], true_e[~est])  # actual values untouched
