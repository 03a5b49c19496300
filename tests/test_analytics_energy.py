"""analytics/energy.py against hand-computed cases and a property."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.energy import (
    Flag,
    align_registers,
    daily_energy,
    interval_energy,
    pin_replacement,
    pin_replacements,
)

INF = np.inf
NAN = np.nan
START = 1_764_115_200  # 2025-11-26T00:00:00Z
STEP = 900


def test_align_exact_interpolated_and_gaps():
    # meter 0: readings exactly on boundaries 0 and 2, and at +60 s / +840 s around boundary 1
    # meter 1: one reading 300 s before boundary 0 only, and one 100 s after boundary 2
    meter = [0, 0, 0, 0, 1, 1]
    ts = [START, START + 2 * STEP, START + 60, START + 840, START - 300, START + 1900]
    val = [100.0, 103.0, 100.2, 101.6, 50.0, 51.0]
    r = align_registers(meter, ts, val, 2, START, STEP, 3, tolerance=900)
    # boundary 1 (START+900): between 840 (101.6) and 1800 (103.0): 101.6 + 60/960·1.4
    assert r[0, 0] == 100.0
    assert r[0, 1] == pytest.approx(101.6 + 60 / 960 * 1.4, rel=1e-12)
    assert r[0, 2] == 103.0
    # meter 1: boundary 0 has a reading 300 s before but the next (1900) is 1900 s away → NaN;
    # boundary 1: before is 1200 s away → NaN; boundary 2 (1800): 50+ (2100/2200)·1 but 2100 s
    # from the previous reading exceeds the tolerance → NaN
    assert np.isnan(r[1]).all()
    # with a tolerance of 2200 s, boundary 2 of meter 1 interpolates: 50 + 2100/2200 · 1
    r2 = align_registers(meter, ts, val, 2, START, STEP, 3, tolerance=2200)
    assert r2[1, 2] == pytest.approx(50.0 + 2100 / 2200, rel=1e-12)


def test_align_unsorted_equals_sorted_and_never_crosses_meters():
    rng = np.random.default_rng(1)
    meter = np.repeat(np.arange(3), 5)
    ts = np.tile(START + np.arange(5) * STEP, 3)
    val = np.arange(15, dtype=float)
    perm = rng.permutation(15)
    a = align_registers(meter, ts, val, 4, START, STEP, 5, tolerance=0)
    b = align_registers(meter[perm], ts[perm], val[perm], 4, START, STEP, 5, tolerance=0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:3], val.reshape(3, 5))
    assert np.isnan(a[3]).all()  # meter 3 has no readings: its neighbours' are not used
    # meter 2's readings end at boundary 4: boundary 5 must not borrow from anything else
    c = align_registers(meter, ts, val, 3, START, STEP, 6, tolerance=10_000)
    assert np.isnan(c[:, 5]).all()


def test_align_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="two values"):
        align_registers([0, 0], [START, START], [1.0, 2.0], 1, START, STEP, 2, 0)
    with pytest.raises(ValueError, match="meter_idx outside"):
        align_registers([3], [START], [1.0], 2, START, STEP, 2, 0)
    with pytest.raises(ValueError, match="differ in length"):
        align_registers([0], [START, START], [1.0], 1, START, STEP, 2, 0)


def test_rollover_reset_and_spike_told_apart():
    # registers of a 999999.99 meter: it wraps at 1,000,000.00
    r = np.array(
        [
            [999_999.50, 0.30, 0.70],  # wrap: 0.49 + 0.01 + 0.30 = 0.80, then 0.40
            [5_000.00, 12.00, 13.00],  # back by 4988: no plausible wrap → reset, then 1.00
            [5_000.00, 5_900.00, 5_901.00],  # +900 in 15 min with max_step 50 → implausible
        ]
    )
    e, f = interval_energy(r, [1.0, 1.0, 1.0], [1e6] * 3, [50.0] * 3)
    assert e[0, 0] == pytest.approx(0.80, abs=1e-9)
    assert e[0, 1] == pytest.approx(0.40, abs=1e-9)
    assert list(f[0]) == [Flag.ROLLOVER, Flag.OK]
    assert np.isnan(e[1, 0]) and f[1, 0] == Flag.RESET
    assert e[1, 1] == pytest.approx(1.0) and f[1, 1] == Flag.OK
    assert np.isnan(e[2, 0]) and f[2, 0] == Flag.IMPLAUSIBLE
    assert e[2, 1] == pytest.approx(1.0)
    # without a modulus (inf) the same wrap is a reset
    e2, f2 = interval_energy(r[:1], [1.0], [INF], [50.0])
    assert np.isnan(e2[0, 0]) and f2[0, 0] == Flag.RESET


def test_gaps_stay_nan_never_zero():
    r = np.array([[10.0, NAN, 12.0, 12.0]])
    e, f = interval_energy(r, [2.0], [INF], [INF])
    assert np.isnan(e[0, 0]) and np.isnan(e[0, 1])
    assert e[0, 2] == 0.0  # a real zero advance is zero
    assert list(f[0]) == [Flag.GAP, Flag.GAP, Flag.OK]


def test_multiplier_per_interval_applies_from_its_interval():
    # registers advance 1, 2, 3, 4; multiplier 40 until interval 2, 80 from interval 2 on
    r = np.array([[0.0, 1.0, 3.0, 6.0, 10.0]])
    mult = np.array([[40.0, 40.0, 80.0, 80.0]])
    e, f = interval_energy(r, mult, [INF], [INF])
    np.testing.assert_array_equal(e[0], [40.0, 80.0, 240.0, 320.0])
    # NaN multiplier: meter not placed for that interval
    e, f = interval_energy(r, np.array([[40.0, NAN, 40.0, 40.0]]), [INF], [INF])
    assert np.isnan(e[0, 1]) and f[0, 1] == Flag.OUT_OF_SERVICE


def test_replacement_mid_interval_is_exact():
    b = START + STEP * np.arange(4)
    at = START + STEP + 400  # inside interval 1 (boundaries 1 → 2)
    old = np.array([1000.0, 1001.0, NAN, NAN])  # removed, no readings afterwards
    new = np.array([NAN, NAN, 0.7, 1.9])  # fitted with register 0.2
    o, n = pin_replacement(old, new, b, at, old_final=1001.6, new_first=0.2)
    eo, _ = interval_energy(o[None], [30.0], [INF], [INF])
    en, _ = interval_energy(n[None], [1.0], [INF], [INF])
    total = eo[0] + en[0]
    # interval 0: old 1001.0 − 1000.0 = 1 × 30
    # interval 1: (old_final 1001.6 − 1001.0)·30 + (0.7 − new_first 0.2)·1 = 18 + 0.5
    # interval 2: new 1.9 − 0.7 = 1.2
    np.testing.assert_allclose(total, [30.0, 18.5, 1.2], rtol=1e-12)
    # the same through the vectorised form, on a replacement exactly on boundary 2
    regs = np.vstack([old, new])
    regs[0, 2] = NAN
    p = pin_replacements(regs, b, [0], [1], [b[2]], [1001.6], [0.2])
    e, _ = interval_energy(p, [30.0, 1.0], [INF, INF], [INF, INF])
    # old: interval 1 = 1001.6 − 1001.0; new: interval 1 = 0, interval 2 = 1.9 − 0.2
    np.testing.assert_allclose(np.nansum(e, axis=0), [30.0, 18.0, 1.7], rtol=1e-12)
    assert not np.isnan(e).any()


def test_replacement_chain_vectorised():
    b = START + STEP * np.arange(5)
    regs = np.array(
        [
            [10.0, 11.0, NAN, NAN, NAN],  # A, replaced by B at boundary 1.5
            [NAN, NAN, 3.0, NAN, NAN],  # B, replaced by C at boundary 2.5
            [NAN, NAN, NAN, 8.0, 9.0],  # C
        ]
    )
    p = pin_replacements(
        regs, b, [0, 1], [1, 2], [b[1] + 450, b[2] + 450], [11.5, 3.25], [2.0, 7.0]
    )
    e, _ = interval_energy(p, [1.0] * 3, [INF] * 3, [INF] * 3)
    # 0: 11 − 10 = 1; 1: (11.5 − 11) + (3 − 2) = 1.5; 2: (3.25 − 3) + (8 − 7) = 1.25; 3: 1
    np.testing.assert_allclose(np.nansum(e, axis=0), [1.0, 1.5, 1.25, 1.0])
    assert not np.isnan(e).any()


def test_daily_energy_from_frozen():
    frozen = np.array([[999_990.0, 5.0, 25.0], [100.0, NAN, 130.0]])
    e, f = daily_energy(frozen, [1.0, 10.0], [1e6, 1e6], [100.0, 100.0])
    # 999990 → 5: 10 + 5 = 15 (rollover); 5 → 25: 20; second meter: gap, gap
    np.testing.assert_allclose(e[0], [15.0, 20.0])
    assert f[0, 0] == Flag.ROLLOVER
    assert np.isnan(e[1]).all() and (f[1] == Flag.GAP).all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    t=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    wrap=st.booleans(),
)
def test_sum_of_intervals_equals_register_difference(n, t, seed, wrap):
    rng = np.random.default_rng(seed)
    inc = rng.uniform(0, 5, (n, t)).round(2)
    start = rng.uniform(0, 1e6 - 1, n).round(2)
    true = start[:, None] + np.concatenate([np.zeros((n, 1)), inc.cumsum(axis=1)], axis=1)
    modulus = 1e6 if wrap else INF
    shown = np.mod(true, 1e6) if wrap else true
    mult = rng.choice([1.0, 20.0, 80.0], n)
    e, f = interval_energy(shown, mult, [modulus] * n, [5.01] * n)
    assert not np.isnan(e).any()
    np.testing.assert_allclose(
        e.sum(axis=1), (true[:, -1] - true[:, 0]) * mult, rtol=1e-9, atol=1e-6
    )
    assert set(np.unique(f)) <= {Flag.OK, Flag.ROLLOVER}
