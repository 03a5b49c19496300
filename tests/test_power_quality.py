"""The power-quality core (analytics/power_quality.py) on hand-computed cases, the limits
themselves included."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.power_quality import (
    combine,
    composite_rate,
    deviation_pct,
    limits_for,
    qualification,
    ten_minute_means,
    unbalance,
    unbalance_deviation,
    unbalance_sequence,
    weekly_compliance,
)

NAN = np.nan


def test_rate_220v_boundaries_and_missing_time():
    # 220 V, +7 %/−10 %: upper 235.4 V, lower 198.0 V; a limit itself is qualified.
    # samples (1 min each): 235.4 ok, 235.5 over, 198.0 ok, 197.9 under, 220 ok, missing
    v = np.array([[235.4, 235.5, 198.0, 197.9, 220.0, NAN]])
    q = qualification(v, [220.0], [7.0], [-10.0], np.zeros(6, int), 1, 60)
    assert q.monitored[0, 0] == 5 * 60  # the missing minute is not monitored …
    assert q.missing[0, 0] == 60  # … and is reported
    assert q.over[0, 0] == 60 and q.under[0, 0] == 60
    assert q.rate[0, 0] == pytest.approx((1 - 120 / 300) * 100)  # 60 %
    assert q.max_v[0, 0] == 235.5 and q.min_v[0, 0] == 197.9


def test_rate_per_period_and_symmetric_limits():
    # two meters, two days of 2 samples each (900 s per sample)
    # m0: 380 V system, phase nominal 220, ±7 %: 204.6 … 235.4
    #     day 0: 204.6 (ok, on the limit), 204.5 (under)  → 50 %
    #     day 1: 235.4 ok, 230 ok                           → 100 %
    # m1: 10 kV head behind a 10000/100 PT: nominal 10000/√3/100 = 57.735 V, ±7 %
    #     day 0: 61.8 (61.8 / 57.735 = 1.07041: +7.041 %, over), 57.7 ok → 50 %
    #     day 1: missing, missing                           → NaN, 1800 s missing
    nom_head = 10000 / np.sqrt(3) / 100
    v = np.array([[204.6, 204.5, 235.4, 230.0], [61.8, 57.7, NAN, NAN]])
    q = qualification(
        v, [220.0, nom_head], [7.0, 7.0], [-7.0, -7.0], np.array([0, 0, 1, 1]), 2, 900
    )
    np.testing.assert_allclose(q.rate, [[50.0, 100.0], [50.0, NAN]])
    np.testing.assert_array_equal(q.under, [[900, 0], [0, 0]])
    np.testing.assert_array_equal(q.over, [[0, 0], [900, 0]])
    np.testing.assert_array_equal(q.missing, [[0, 0], [0, 1800]])
    assert deviation_pct(np.array([[61.8]]), [nom_head])[0, 0] == pytest.approx(7.0407, abs=1e-4)


def test_expected_bounds_the_missing_time_and_bad_input_is_refused():
    v = np.array([[220.0, NAN, NAN]])
    # the third sample was never expected (the meter was not yet placed): not missing
    q = qualification(v, [220.0], [7.0], [-10.0], np.zeros(3, int), 1, 60, [[1, 1, 0]])
    assert q.missing[0, 0] == 60 and q.monitored[0, 0] == 60
    with pytest.raises(ValueError, match="upper limit"):
        qualification(v, [220.0], [-10.0], [7.0], np.zeros(3, int), 1, 60)
    with pytest.raises(ValueError, match="nominal"):
        deviation_pct(v, [0.0])
    with pytest.raises(ValueError, match="period_of"):
        qualification(v, [220.0], [7.0], [-10.0], np.array([0, 1, 2]), 2, 60)


def test_combine_is_time_weighted():
    # meter a: 100 min monitored, 10 out; meter b: 50 min monitored, 20 out
    # area = 1 − 30/150 = 80 % (not the mean of 90 % and 60 % = 75 %)
    v = np.array([[220.0] * 90 + [250.0] * 10, [220.0] * 30 + [250.0] * 20 + [NAN] * 50])
    q = qualification(v, [220.0, 220.0], [7.0, 7.0], [-10.0, -10.0], np.zeros(100, int), 1, 60)
    area = combine(q, np.array([0, 0]), 1)
    assert area.rate[0, 0] == pytest.approx(80.0)
    assert area.missing[0, 0] == 50 * 60 and area.max_v[0, 0] == 250.0


def test_composite_rate_weights_and_absent_class():
    # class A: one monitor 100 % (10 min); B: b1 90 of 100 min in limits, b2 40 of 50
    # → B = 1 − (10 + 10)/150 = 86.667 %; C: none; D: 19 of 20 → 95 %.
    # weights 0.5, 1/6, 1/6, 1/6; C absent → (0.5·100 + 86.667/6 + 95/6) / (0.5 + 2/6)
    rows = [
        [220.0] * 10 + [NAN] * 90,
        [220.0] * 90 + [250.0] * 10,
        [220.0] * 40 + [250.0] * 10 + [NAN] * 50,
        [220.0] * 19 + [250.0] + [NAN] * 80,
    ]
    v = np.array(rows)
    ones = np.ones(4)
    q = qualification(v, 220 * ones, 7 * ones, -10 * ones, np.zeros(100, int), 1, 60)
    weights = np.array([0.5, 1 / 6, 1 / 6, 1 / 6])
    rate, per_class = composite_rate(q, np.array([0, 1, 1, 3]), weights)
    b = (1 - 20 / 150) * 100
    expected = (0.5 * 100 + b / 6 + 95 / 6) / (0.5 + 2 / 6)
    assert rate[0] == pytest.approx(expected)  # 96.333 %
    np.testing.assert_allclose(per_class.rate[:, 0], [100, b, NAN, 95])
    with pytest.raises(ValueError, match="weights"):
        composite_rate(q, np.array([0, 1, 1, 3]), np.array([1.0, -1, 0, 0]))


def test_unbalance_negative_sequence():
    # balanced: 0; one phase only: V1 = V2 = 1/3 → 100 %
    assert unbalance_sequence([230, 230, 230], [0, -120, 120]) == pytest.approx(0, abs=1e-12)
    assert unbalance_sequence([1, 0, 0], [0, -120, 120]) == pytest.approx(100)
    # 230, 230, 200 at 0/−120/120: V1 = (230 + 230 + 200)/3 = 220,
    # V2 = (230 + 230·a + 200·a²)/3 = (230(1 + a + a²) − 30a²)/3 = −10a² → |V2| = 10
    assert unbalance_sequence([230, 230, 200], [0, -120, 120]) == pytest.approx(10 / 220 * 100)
    # an angle error alone unbalances: Vc at 130° instead of 120°
    assert unbalance_sequence([230, 230, 230], [0, -120, 130]) > 2


def test_unbalance_without_angles_and_fallback():
    # mean 220, max |V − mean| = 20 → 9.0909 %
    assert unbalance_deviation([230, 230, 200]) == pytest.approx(20 / 220 * 100)
    assert np.isnan(unbalance_deviation([230, NAN, 200]))
    assert np.isnan(unbalance_deviation([0.0, 0.0, 0.0]))  # no current: no unbalance
    mags = np.array([[230, 230, 200], [230, 230, 200]], float)
    angles = np.array([[0, -120, 120], [0, NAN, 120]], float)
    np.testing.assert_allclose(unbalance(mags, angles), [10 / 220 * 100, 20 / 220 * 100])


def test_ten_minute_means():
    v = np.array([[220.0] * 10 + [230.0] * 9 + [NAN]])  # 20 one-minute samples
    np.testing.assert_allclose(ten_minute_means(v, 60), [[220.0, NAN]])
    np.testing.assert_array_equal(ten_minute_means(v[:, :2], 900), v[:, :2])  # kept
    with pytest.raises(ValueError, match="10 minutes"):
        ten_minute_means(v, 420)


def test_weekly_compliance_95_percent_boundary():
    # 220 V, band ±10 % = 198 … 242, wide +10 %/−15 % = 187 … 242; 20 means a week
    # week 0: 19 in band, one at 190 (in the wide band) → 95 % → compliant (the boundary)
    # week 1: 18 in band, two at 190 → 90 % → not
    # week 2: 19 in band, one at 243 → 95 %, but beyond the wide band → not
    # week 3: nothing counted (all windows incomplete) → NaN, not compliant
    w0 = [220.0] * 19 + [190.0]
    w1 = [220.0] * 18 + [190.0] * 2
    w2 = [242.0] * 19 + [243.0]
    w3 = [NAN] * 20
    m = np.array([w0 + w1 + w2 + w3])
    week = np.repeat(np.arange(4), 20)
    c = weekly_compliance(m, week, 4, ([198.0], [242.0]), ([187.0], [242.0]))
    np.testing.assert_allclose(c.share, [[95.0, 90.0, 95.0, NAN]])
    np.testing.assert_array_equal(c.compliant, [[True, False, False, False]])
    np.testing.assert_array_equal(c.all_within, [[True, True, False, True]])
    np.testing.assert_array_equal(c.incomplete, [[0, 0, 0, 20]])


def test_limits_by_nominal_voltage():
    table = [(220, 7, -10), (380, 7, -7), (10000, 7, -7), (35000, 5, -5)]
    upper, lower = limits_for(np.array([220, 380, 10000, 35000, 110000, 230]), table)
    np.testing.assert_array_equal(upper, [7, 7, 7, 5, 5, 7])
    np.testing.assert_array_equal(lower, [-10, -7, -7, -5, -5, -10])  # 230 V: the 220 V row
    with pytest.raises(ValueError, match="no voltage limits for a 100 V system"):
        limits_for(np.array([100.0]), table)


def test_settings_refuse_limits_beyond_the_35kv_sum_rule():
    from gridread.settings import Settings

    ok = Settings(pq_voltage_limits=[(220, 7, -10), (35000, 7, -3)])  # 7 + 3 = 10: allowed
    assert ok.pq_voltage_limits[1] == (35000, 7, -3)
    with pytest.raises(ValueError, match="must be ≤ 10 %"):
        Settings(pq_voltage_limits=[(220, 7, -10), (35000, 7, -3.5)])
    with pytest.raises(ValueError, match="upper ≥ 0"):
        Settings(pq_voltage_limits=[(220, -1, -10)])


def test_the_job_policy_follows_the_settings():
    from analytics.power_quality_job import policy_from_settings
    from gridread.settings import Settings

    s = Settings(
        pq_voltage_limits=[(220, 5, -5)],
        pq_class_weights=(1, 0, 0, 0),
        pq_monitor_disagreement_pp=1.5,
        nominal_voltage=230.0,
        timezone="UTC",
    )
    p = policy_from_settings(s)
    assert (p.limits, p.class_weights, p.disagreement_pp) == (((220, 5, -5),), (1, 0, 0, 0), 1.5)
    assert (p.site_nominal_v, p.timezone, p.weekly_share) == (230.0, "UTC", 95.0)
