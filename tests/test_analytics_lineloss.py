"""analytics/lineloss.py against hand-computed cases and a reference written differently."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.lineloss import (
    Bands,
    Status,
    concat_results,
    group_loss,
    level_loss,
    member_order,
    period_loss,
)

NAN = np.nan


def test_hand_computed_area():
    # supply 1000 kWh; customers 300 + 250 + 400 = 950 → loss 50, rate 50/1000·100 = 5 %
    r = group_loss([[1000.0]], [[300.0], [250.0], [400.0]], np.array([0, 0, 0]), None)
    assert r.sales[0, 0] == 950.0
    assert r.loss[0, 0] == 50.0
    assert r.rate[0, 0] == 5.0
    assert r.coverage[0, 0] == 1.0
    assert r.status[0, 0] == Status.NORMAL
    assert (r.present[0, 0], r.expected[0, 0]) == (4, 4)


def test_feeder_head_minus_area_totals_including_dedicated():
    # feeder f0 head 5000; its areas: a0 public total 2000, a1 public total 1800,
    # a2 dedicated (专变, the customer's own meter is the area total) 900
    # → sales 2000 + 1800 + 900 = 4700, loss 300, rate 6 %
    # feeder f1 head 1000; one area total 1005 → loss −5, rate −0.5 % (NORMAL, ≥ −1)
    head = np.array([[5000.0], [1000.0]])
    totals = np.array([[2000.0], [1800.0], [900.0], [1005.0]])
    r = group_loss(head, totals, np.array([0, 0, 0, 1]), None)
    np.testing.assert_array_equal(r.sales[:, 0], [4700.0, 1005.0])
    np.testing.assert_array_equal(r.loss[:, 0], [300.0, -5.0])
    np.testing.assert_array_equal(r.rate[:, 0], [6.0, -0.5])
    assert list(r.status[:, 0]) == [Status.NORMAL, Status.NORMAL]


def test_levels_from_feeders_and_public_areas():
    # 10 kV level: feeders; 0.4 kV level: public areas; a dedicated area is in no level
    feeders = group_loss([[5000.0], [1000.0]], [[4700.0], [1005.0]], np.array([0, 1]), None)
    areas = group_loss(
        [[2000.0], [1800.0], [900.0]],
        [[1900.0], [1500.0], [900.0]],
        np.array([0, 1, 2]),
        None,
    )
    both = concat_results(feeders, areas)
    lv = level_loss(both, np.array([0, 0, 1, 1, -1]), 2)
    # 10 kV: (300 − 5) / (5000 + 1000) = 295/6000 → 4.91666… %
    # 0.4 kV: (100 + 300) / (2000 + 1800) = 400/3800 → 10.526… % → HIGH
    assert lv.rate[0, 0] == pytest.approx(295 / 6000 * 100, rel=1e-12)
    assert lv.rate[1, 0] == pytest.approx(400 / 3800 * 100, rel=1e-12)
    assert list(lv.status[:, 0]) == [Status.NORMAL, Status.HIGH]
    np.testing.assert_array_equal(lv.supply[:, 0], [6000.0, 3800.0])
    assert (lv.coverage[:, 0] == 1.0).all()
    # one public area not computable (its total meter missing) → the 0.4 kV level is too,
    # with its coverage: (2 + 2 + 1 present … ) see below, and NaN rate
    areas2 = group_loss(
        [[2000.0], [NAN], [900.0]], [[1900.0], [1500.0], [900.0]], np.array([0, 1, 2]), None
    )
    lv2 = level_loss(concat_results(feeders, areas2), np.array([0, 0, 1, 1, -1]), 2)
    assert lv2.status[1, 0] == Status.NOT_COMPUTABLE and np.isnan(lv2.rate[1, 0])
    # 0.4 kV meter-intervals: area 0 has 2/2, area 1 has 1/2 → 3/4
    assert lv2.coverage[1, 0] == 0.75
    assert lv2.status[0, 0] == Status.NORMAL


def test_coverage_exact_with_one_of_twenty_missing():
    # an area with 20 customers and a total meter: 21 meter-intervals per interval
    t = 4
    members = np.full((20, t), 10.0)
    members[7, 1] = NAN  # customer 7 missing in interval 1
    members[7, 3] = NAN
    members[12, 3] = NAN  # and customer 12 too in interval 3
    supply = np.full((1, t), 220.0)
    g = np.zeros(20, dtype=np.int64)
    exp = np.ones((20, t), dtype=bool)
    r = group_loss(supply, members, g, exp, min_coverage=0.95)
    assert list(r.coverage[0]) == [1.0, 20 / 21, 1.0, 19 / 21]
    assert list(r.present[0]) == [21, 20, 21, 19]
    # 20/21 = 0.952 ≥ 0.95: computable, on what is there (sales 190, loss 30)
    assert r.sales[0, 1] == 190.0 and r.loss[0, 1] == 30.0
    # 19/21 = 0.905 < 0.95: not computable — NaN, never a fake rate; sales still the sum
    assert r.status[0, 3] == Status.NOT_COMPUTABLE
    assert np.isnan(r.rate[0, 3]) and np.isnan(r.loss[0, 3])
    assert r.sales[0, 3] == 180.0
    # the default min_coverage 1.0: interval 1 too is not computable
    r1 = group_loss(supply, members, g, exp)
    assert list(r1.status[0]) == [Status.NORMAL, 0, Status.NORMAL, 0]
    # a customer not expected (not in service) in interval 2 and silent: not missing
    exp[3, 2] = False
    members[3, 2] = NAN
    r2 = group_loss(supply, members, g, exp)
    assert r2.coverage[0, 2] == 1.0 and r2.expected[0, 2] == 20


def test_supply_missing_or_not_positive_is_not_computable():
    members = np.array([[1.0, 1.0, 1.0]])
    r = group_loss([[NAN, 0.0, -3.0]], members, np.array([0]), None)
    assert (r.status == Status.NOT_COMPUTABLE).all()
    assert np.isnan(r.rate).all() and np.isnan(r.loss).all()
    assert r.coverage[0, 0] == 0.5 and r.coverage[0, 1] == 1.0
    assert (r.sales == 1.0).all()


def test_band_boundaries_exactly_as_configured():
    # supply 100: sales chosen so that rate = (100 − sales)% exactly representable
    sales = np.array([[101.0, 101.0000001, 90.0, 89.0, 100.0]])
    r = group_loss([[100.0] * 5], sales, np.array([0]), None)
    assert r.rate[0, 0] == -1.0
    assert r.rate[0, 1] < -1.0
    assert r.rate[0, 2] == 10.0
    assert list(r.status[0]) == [
        Status.NORMAL,  # −1.0 is on the boundary → NORMAL
        Status.NEGATIVE,  # −1.0000001
        Status.NORMAL,  # 10.0
        Status.HIGH,  # 11.0
        Status.NORMAL,
    ]
    # other bands, same rule
    r2 = group_loss([[100.0] * 5], sales, np.array([0]), None, bands=Bands(0.0, 11.0))
    assert list(r2.status[0]) == [1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="negative_below"):
        Bands(5.0, 1.0)


def test_member_moving_area_mid_day():
    # meter 2 belongs to area 0 in intervals 0–1 and to area 1 from interval 2 on
    members = np.array([[10.0] * 4, [20.0] * 4, [5.0] * 4])
    g = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    supply = np.array([[16.0] * 4, [26.0] * 4])
    r = group_loss(supply, members, g, None)
    np.testing.assert_array_equal(r.sales, [[15, 15, 10, 10], [20, 20, 25, 25]])
    np.testing.assert_array_equal(r.loss, [[1, 1, 6, 6], [6, 6, 1, 1]])
    np.testing.assert_array_equal(r.expected, [[3, 3, 2, 2], [2, 2, 3, 3]])
    # −1: a member in no group for an interval (e.g. between removal and refit)
    g[2, 3] = -1
    r = group_loss(supply, members, g, None)
    assert r.sales[1, 3] == 20.0 and r.expected[1, 3] == 2


def test_period_loss_day_sums():
    # 4 intervals, two "days" of two intervals each
    supply = np.array([[100.0, 110.0, NAN, 90.0]])
    members = np.array([[40.0, 50.0, 45.0, 40.0], [50.0, 50.0, 50.0, NAN]])
    iv = group_loss(supply, members, np.array([0, 0]), None, min_coverage=0.0)
    day = period_loss(iv, np.array([0, 0, 1, 1]), 2, min_coverage=0.0)
    # day 0: supply 210, sales 190, loss 20, rate 20/210 %; coverage 6/6
    assert day.supply[0, 0] == 210.0 and day.sales[0, 0] == 190.0
    assert day.rate[0, 0] == pytest.approx(20 / 210 * 100, rel=1e-12)
    # day 1: supply missing in interval 2 → not computable; coverage (1+2+... ) = 4/6
    assert day.status[0, 1] == Status.NOT_COMPUTABLE and np.isnan(day.rate[0, 1])
    assert day.coverage[0, 1] == 4 / 6


def reference(supply, members, group_of, expected, min_coverage):
    """A straightforward per-group, per-interval loop (the test's own, written apart)."""
    g_n, t_n = supply.shape
    rate = np.full((g_n, t_n), np.nan)
    cov = np.zeros((g_n, t_n))
    for g in range(g_n):
        for t in range(t_n):
            idx = [i for i in range(members.shape[0]) if group_of[i, t] == g]
            vals = [members[i, t] for i in idx if not np.isnan(members[i, t])]
            exp = sum(1 for i in idx if expected[i, t] or not np.isnan(members[i, t]))
            pres = len(vals) + (0 if np.isnan(supply[g, t]) else 1)
            cov[g, t] = pres / (exp + 1)
            if not np.isnan(supply[g, t]) and supply[g, t] > 0 and cov[g, t] >= min_coverage:
                rate[g, t] = (supply[g, t] - sum(vals)) / supply[g, t] * 100
    return rate, cov


@pytest.mark.parametrize("mapping", ["fixed", "moving", "equal-size"])
def test_agrees_with_reference(mapping):
    rng = np.random.default_rng(7)
    g_n, n, t = 12, 150, 24
    members = rng.gamma(2.0, 0.4, (n, t))
    members[rng.random((n, t)) < 0.02] = NAN
    moving = mapping == "moving"
    if moving:
        group_of = rng.integers(-1, g_n, (n, t))
    elif mapping == "equal-size":  # 12 areas of 12 (the reshape path), 6 meters in none
        group_of = np.repeat(
            rng.permutation(np.r_[np.repeat(np.arange(g_n), 12), [-1] * 6])[:, None], t, axis=1
        )
    else:
        group_of = np.repeat(rng.integers(-1, g_n, n)[:, None], t, axis=1)
    expected = rng.random((n, t)) < 0.97
    supply = np.zeros((g_n, t))
    for g in range(g_n):
        supply[g] = np.nansum(np.where(group_of == g, members, 0.0), axis=0) * 1.05 + 0.1
    supply[3, 5] = NAN
    r = group_loss(
        supply, members, group_of if moving else group_of[:, 0], expected, min_coverage=0.9
    )
    want_rate, want_cov = reference(supply, members, group_of, expected, 0.9)
    np.testing.assert_allclose(r.coverage, want_cov, rtol=1e-15)
    assert np.array_equal(np.isnan(r.rate), np.isnan(want_rate))
    np.testing.assert_allclose(r.rate, want_rate, rtol=1e-9)
    assert (r.status == Status.NOT_COMPUTABLE).any() and (r.status != 0).any()


def test_bad_input_one_line_errors():
    with pytest.raises(ValueError, match="group_of outside"):
        group_loss([[1.0]], [[1.0]], np.array([1]), None)
    with pytest.raises(ValueError, match="group_of must be int"):
        group_loss([[1.0]], [[1.0]], np.array([0.0]), None)
    with pytest.raises(ValueError, match="expected must be"):
        group_loss([[1.0]], [[1.0]], np.array([0]), np.ones((2, 1), bool))


def test_static_paths_agree_in_any_member_order():
    # areas of sizes 3, 3, 3, 5, 5, 1 (+ members in no area): ordered by member_order the
    # equal sizes form runs (reshape path); shuffled they are sorted first; per-interval
    # the test's reference loop as the judge; with gaps and not-expected members
    rng = np.random.default_rng(11)
    sizes = [3, 3, 3, 5, 5, 1]
    g = np.concatenate([np.repeat(np.arange(6), sizes), [-1, -1]])
    rng.shuffle(g)
    t = 7
    members = rng.uniform(0, 2, (g.size, t))
    members[2, 3] = NAN
    expected = np.ones((g.size, t), bool)
    expected[5, 1] = False
    supply = np.full((6, t), 12.0)
    want_rate, want_cov = reference(supply, members, np.repeat(g[:, None], t, 1), expected, 0.9)
    want_sales = np.array([np.nansum(members[g == k], axis=0) for k in range(6)])
    order = member_order(g)
    assert list(np.bincount(g[order][g[order] >= 0])) == sizes
    for perm in (order, np.arange(g.size)):
        got = group_loss(supply, members[perm], g[perm], expected[perm], min_coverage=0.9)
        np.testing.assert_allclose(got.sales, want_sales, rtol=1e-12)
        np.testing.assert_allclose(got.rate, want_rate, rtol=1e-12)
        np.testing.assert_array_equal(got.coverage, want_cov)
    # and the bincount path (a mapping that really moves: the lone member leaves at t = 6)
    moving = np.repeat(g[:, None], t, 1)
    moving[g == 5, 6] = -1
    got = group_loss(supply, members, moving, expected, min_coverage=0.9)
    np.testing.assert_allclose(got.sales[:5], want_sales[:5], rtol=1e-12)
    assert got.sales[5, 6] == 0.0 and got.expected[5, 6] == 1
