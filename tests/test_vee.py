"""VEE core (analytics/vee*.py) against hand-computed cases: the arithmetic is in each test."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.vee import DEFAULT_POLICY, Method, Rule, VeePolicy, validate_frozen, validate_profile
from analytics.vee_estimate import (
    day_type_profile,
    estimate_frozen,
    estimate_profile,
    estimate_tou,
)
from analytics.vee_pipeline import run_vee_block
from ingest.model import Quality

NAN = np.nan
Q_SUSPECT = int(Quality.SUSPECT)  # ingest's flag (not a VEE Rule bit)


def block(reg, quality=None, *, frozen=None, fq=None, per_day=None, tou=None, profile=None,
          policy=DEFAULT_POLICY, max_step=10.0, modulus=None):  # fmt: skip
    reg = np.array([reg], dtype=float)
    t = reg.shape[1] - 1
    per_day = per_day or t
    days = t // per_day
    q = np.zeros_like(reg, dtype=np.int16) if quality is None else np.array([quality])
    f = np.full((1, days + 1), NAN) if frozen is None else np.array([frozen], dtype=float)
    fq_ = np.zeros_like(f, dtype=np.int16) if fq is None else np.array([fq])
    prof = None if profile is None else np.array([profile], dtype=float)
    return run_vee_block(
        reg, q, np.array([max_step]), f, fq_, per_day=per_day, tou=tou, profile=prof,
        policy=policy, modulus=None if modulus is None else np.array([modulus]),
    )  # fmt: skip


def test_short_gap_is_linear():
    # registers 0, 1, ?, ?, 4, 5: the gap between R1 = 1 and R4 = 4 (3 intervals):
    # R2 = 1 + (4 − 1)·1/3 = 2, R3 = 1 + 3·2/3 = 3 → every interval 1 kWh
    r = block([0, 1, NAN, NAN, 4, 5])
    np.testing.assert_allclose(r.energy[0], [1, 1, 1, 1, 1])
    assert list(r.method[0]) == [0, 1, 1, 1, 0]  # intervals touching an estimate: estimated
    assert r.rules[0, 1] == Rule.GAP | Rule.LINEAR
    assert r.rules[0, 0] == 0 and r.valid.all()


def test_long_gap_follows_the_profile_scaled_to_the_register_delta():
    # R0 = 10, R4 = 14, three missing; max_linear_gap 1 → profile. Profile 1, 3, 2, 2:
    # C = 0, 1, 4, 6, 8; delta 4 over a profile of 8 → factor 0.5:
    # R1 = 10 + 4·1/8 = 10.5, R2 = 10 + 4·4/8 = 12, R3 = 10 + 4·6/8 = 13
    r = block([10, NAN, NAN, NAN, 14], profile=[1, 3, 2, 2], policy=VeePolicy(max_linear_gap=1))
    np.testing.assert_allclose(r.registers[0], [10, 10.5, 12, 13, 14])
    np.testing.assert_allclose(r.energy[0], [0.5, 1.5, 1, 1])
    assert r.energy[0].sum() == pytest.approx(4.0)  # exact across the gap
    assert all(r.rules[0] & Rule.PROFILE) and all(r.rules[0] & Rule.SCALED)
    assert list(r.method[0]) == [Method.ESTIMATED] * 4


def test_long_gap_without_profile_falls_back_to_linear():
    # no profile: 10 → 14 over 4 intervals, 1 kWh each, said to be LINEAR
    r = block([10, NAN, NAN, NAN, 14], policy=VeePolicy(max_linear_gap=1))
    np.testing.assert_allclose(r.energy[0], [1, 1, 1, 1])
    assert all(r.rules[0] & Rule.LINEAR)


def test_gap_at_the_end_uses_the_profile_unscaled():
    # R1 = 2 known, R2, R3 missing, profile 2, 1, 3: R2 = 2 + 1 = 3, R3 = 2 + 1 + 3 = 6
    r = block([0, 2, NAN, NAN], profile=[2, 1, 3])
    np.testing.assert_allclose(r.registers[0], [0, 2, 3, 6])
    assert r.rules[0, 2] == Rule.GAP | Rule.PROFILE and not r.rules[0, 2] & Rule.SCALED
    # no profile and one side only: not estimated, not validated
    r = block([0, 2, NAN, NAN])
    assert np.isnan(r.energy[0, 1:]).all() and not r.valid[0, 1:].any()
    assert all(r.rules[0, 1:] & Rule.UNESTIMATED) and r.valid[0, 0]


def test_suspect_kept_when_plausible_replaced_when_not():
    # 0, 1, 2, 3 with R1 SUSPECT at ingest: intervals 1, 1, 1 all plausible → kept, actual
    r = block([0, 1, 2, 3], [0, Q_SUSPECT, 0, 0], max_step=5)
    np.testing.assert_allclose(r.energy[0], [1, 1, 1])
    assert list(r.method[0]) == [0, 0, 0] and r.valid.all()
    assert r.rules[0, 0] == Rule.SUSPECT == r.rules[0, 1]
    # 0, 1, −4e23 (a wrong word order, SUSPECT), 3, 4: replaced by 1 + (3 − 1)/2 = 2
    r = block([0, 1, -4e23, 3, 4], [0, 0, Q_SUSPECT, 0, 0], max_step=5)
    np.testing.assert_allclose(r.energy[0], [1, 1, 1, 1])
    assert r.rules[0, 1] == Rule.SUSPECT | Rule.LINEAR  # the NEGATIVE is explained
    # a SUSPECT 1e5 between two gaps: nothing confirms it → estimated with them: 0 → 4
    # over 4 steps, R1, R2, R3 = 1, 2, 3
    r = block([0, NAN, 1e5, NAN, 4], [0, 0, Q_SUSPECT, 0, 0], max_step=1e6)
    np.testing.assert_allclose(r.registers[0], [0, 1, 2, 3, 4])
    assert r.rules[0, 1] == Rule.GAP | Rule.SUSPECT | Rule.LINEAR and r.valid.all()


def test_spike_and_reset():
    # 0, 1, 50, 3, 4 (max 5/interval): +49 then −47 around R2 → R2 is the outlier → 2
    r = block([0, 1, 50, 3, 4], max_step=5)
    np.testing.assert_allclose(r.energy[0], [1, 1, 1, 1])
    assert r.rules[0, 1] == Rule.LINEAR and r.valid.all()
    # 0, 1, 2, 0.5, 1.5: one interval goes back (a reset); no boundary to blame → failing
    r = block([0, 1, 2, 0.5, 1.5], max_step=5)
    assert r.rules[0, 2] == Rule.NEGATIVE and list(r.valid[0]) == [True, True, False, True]
    # a gap across which the register went back (5 → 3): not estimated
    r = block([5, NAN, 3])
    assert not r.valid.any() and all(r.rules[0] & Rule.UNESTIMATED)


def test_sum_check_against_the_frozen_delta():
    # 2 days of 4 intervals, 1 kWh each. F = 0, 4, 8.5: day 0 delta 4 = Σ 4 ✓;
    # day 1 delta 4.5 ≠ 4 (|0.5| > 0.05) → SUM_CHECK on day 1 and its intervals
    r = block([0, 1, 2, 3, 4, 5, 6, 7, 8], frozen=[0, 4, 8.5], per_day=4)
    assert list(r.day_rules[0]) == [0, Rule.SUM_CHECK]
    assert r.valid[0, :4].all() and not r.valid[0, 4:].any()
    assert all(r.rules[0, 4:] & Rule.SUM_CHECK)
    # F1 agrees with day 0, so only F2 is unvalidated
    assert list(r.frozen_valid[0]) == [True, True, False]
    # within tolerance: 8.04 − 4 = 4.04, |0.04| ≤ 0.05 → passes
    r = block([0, 1, 2, 3, 4, 5, 6, 7, 8], frozen=[0, 4, 8.04], per_day=4)
    assert r.valid.all() and r.frozen_valid.all()


def test_missing_midnight_from_frozen_and_frozen_from_profile():
    # R = 0, ?×7, 8 with F = 0, 3, 8 and a flat profile (1 per interval), max_linear_gap 1:
    # R4 := F1 = 3 (FROM_FROZEN). Day 0: 0 → 3 over profile 4 → R1..3 = 0.75, 1.5, 2.25;
    # day 1: 3 → 8 → R5..7 = 3 + 5/4 = 4.25, 5.5, 6.75; both days' sums exact (3 and 5)
    reg = [0] + [NAN] * 7 + [8]
    r = block(reg, frozen=[0, 3, 8], per_day=4, profile=[1] * 8,
              policy=VeePolicy(max_linear_gap=1))  # fmt: skip
    np.testing.assert_allclose(r.registers[0], [0, 0.75, 1.5, 2.25, 3, 4.25, 5.5, 6.75, 8])
    assert r.energy[0, :4].sum() == pytest.approx(3) and r.energy[0, 4:].sum() == 5
    assert r.valid.all() and list(r.day_rules[0]) == [0, 0]
    # a SUSPECT frozen register fills nothing: F1 = 3 flagged → R4 stays a gap, estimated
    # from the profile between R0 = 0 and R8 = 8: flat → 4; the day-0 sum 4 ≠ 3 → SUM_CHECK
    r = block(reg, frozen=[0, 3, 8], fq=[0, Q_SUSPECT, 0], per_day=4, profile=[1] * 8,
              policy=VeePolicy(max_linear_gap=1))  # fmt: skip
    assert r.registers[0, 4] == 4 and not r.rules[0, 0] & Rule.FROM_FROZEN
    # both days fail (4 vs 3, 4 vs 5): the SUSPECT F1 is re-estimated from the profile: 4
    assert r.frozen[0, 1] == 4 and r.frozen_rules[0, 1] & Rule.FROM_PROFILE
    assert r.frozen_method[0, 1] == Method.ESTIMATED and r.valid.all() and r.frozen_valid.all()
    # a SUSPECT garbage register at midnight (−4e23 at R4) with a good frozen F1 = 4:
    # replaced by it (FROM_FROZEN), not estimated; everything actual and valid
    reg = [0, 1, 2, 3, -4e23, 5, 6, 7, 8]
    r = block(reg, [0, 0, 0, 0, Q_SUSPECT, 0, 0, 0, 0], frozen=[0, 4, 8], per_day=4)
    np.testing.assert_allclose(r.energy[0], [1] * 8)
    assert r.rules[0, 3] == Rule.SUSPECT | Rule.FROM_FROZEN and r.valid.all()
    assert (r.method[0] == Method.ACTUAL).all()
    # the other way: F1 missing, profile complete 0..8 → F1 := R4 = 4 (FROM_PROFILE)
    r = block([0, 1, 2, 3, 4, 5, 6, 7, 8], frozen=[0, NAN, 8], per_day=4)
    assert r.frozen[0, 1] == 4 and r.frozen_method[0, 1] == Method.ESTIMATED
    assert r.frozen_rules[0, 1] == Rule.GAP | Rule.FROM_PROFILE and r.frozen_valid.all()


def test_frozen_linear_when_profile_is_missing_too():
    # 3 days, no profile at all; F = 0, ?, 10, 16: the profile registers at midnight come
    # from F0, F2, F3; R4 between R0 = 0 and R8 = 10 linearly = 5, and F1 from it
    r = block([NAN] * 13, frozen=[0, NAN, 10, 16], per_day=4)
    assert r.frozen[0, 1] == 5 and r.frozen_rules[0, 1] == Rule.GAP | Rule.FROM_PROFILE
    # nothing at midnight: F1 = 0 + 10·1/2 = 5 linearly between frozen; a 4-day gap (> 3)
    # is not filled
    f = np.array([[0, NAN, 10, NAN, NAN, NAN, NAN, 20]])
    out, method, rules = estimate_frozen(f, np.isnan(f), np.full_like(f, NAN))
    assert out[0, 1] == 5 and rules[0, 1] == Rule.LINEAR and method[0, 1] == Method.ESTIMATED
    assert np.isnan(out[0, 3:7]).all() and (rules[0, 3:7] == Rule.UNESTIMATED).all()
    # the profile registers at midnight came from the frozen ones; the rest linear
    np.testing.assert_allclose(r.registers[0, 8:], [10, 11.5, 13, 14.5, 16])


def test_tou_sum_and_remainder():
    # totals 0, 4, 8; TOU at day boundary 1: 1 + 1 + 1 + 1 = 4 ✓; at 2: 2 + 2 + 2 + ? →
    # ? = 8 − 6 = 2 (TOU_REMAINDER); at 0: 0 + 0 + 0 + 1 = 1 ≠ 0 → TOU_SUM
    tou = np.array([[[0, 1, 2], [0, 1, 2], [0, 1, 2], [1, 1, NAN]]], dtype=float)
    r = block([0, 1, 2, 3, 4, 5, 6, 7, 8], frozen=[0, 4, 8], per_day=4, tou=tou)
    assert r.tou[0, 3, 2] == 2 and r.frozen_rules[0, 2] & Rule.TOU_REMAINDER
    assert list(r.tou_valid[0]) == [False, True, True]
    assert r.frozen_rules[0, 0] & Rule.TOU_SUM and r.frozen_valid[0, 0]  # the total stands
    _, filled = estimate_tou(np.array([[[1.0], [NAN], [NAN], [1.0]]]), np.array([[4.0]]))
    assert not filled.any()  # two missing: no remainder to take


def test_day_type_profile():
    # days [1, 2], [3, ?] (type 0) and [5, 6] (type 1); targets type 1 then type 0:
    # type 1 → [5, 6]; type 0 → [(1 + 3)/2, 2/1] = [2, 2]
    h = np.array([[[1, 2], [3, NAN], [5, 6]]], dtype=float)
    np.testing.assert_allclose(day_type_profile(h, [0, 0, 1], [1, 0]), [[5, 6, 2, 2]])
    assert np.isnan(day_type_profile(h, [0, 0, 1], [2])).all()  # no day of type 2


def test_many_meters_at_once_and_bad_input():
    # the same cases row by row give the same answers as one block (no per-meter state)
    reg = np.array([[0, 1, NAN, 3], [0, 1, 2, 3], [5, NAN, NAN, 8]], dtype=float)
    out, method, rules = estimate_profile(reg, np.isnan(reg), None, VeePolicy())
    np.testing.assert_allclose(out, [[0, 1, 2, 3], [0, 1, 2, 3], [5, 6, 7, 8]])
    assert method.sum() == 3 and (rules[1] == 0).all()
    with pytest.raises(ValueError, match="registers"):
        validate_profile(np.zeros(3), np.zeros(3), np.ones(1))
    with pytest.raises(ValueError, match="frozen must be"):
        validate_profile(np.zeros((1, 5)), np.zeros((1, 5)), np.ones(1),
                         frozen=np.zeros((1, 3)), per_day=4)  # fmt: skip
    with pytest.raises(ValueError, match="day_energy"):
        validate_frozen(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)))


def test_rollover():
    # a register of modulus 1000 (shows up to 999.99), max 10 a step, 4 intervals:
    # 996, 998, ?, 2, 4 → 2 < 998 by no more than the modulus allows (2 + 1000 − 998 = 4
    # ≤ 10 × 2 steps): wrapped → 996, 998, ?, 1002, 1004; R2 = 998 + (1002 − 998)/2 = 1000
    # shows as 0; energies 2 each (ROLLOVER on the interval the wrap was seen in).
    # Frozen 996 → 4: 4 + 1000 − 996 = 8 = Σ 8 ✓. TOU at the end 250 × 3 + 254 = 1004 ≡ 4 ✓
    tou = np.array([[[249, 250], [249, 250], [249, 250], [249, 254]]], dtype=float)
    r = block([996, 998, NAN, 2, 4], frozen=[996, 4], tou=tou, modulus=1000)
    np.testing.assert_allclose(r.registers[0], [996, 998, 0, 2, 4])
    np.testing.assert_allclose(r.energy[0], [2, 2, 2, 2])
    assert r.rules[0, 2] & Rule.ROLLOVER and r.valid.all()
    assert list(r.frozen[0]) == [996, 4] and r.frozen_valid.all() and r.tou_valid.all()
    # a missing TOU register across the wrap: 4 − 750 = −746 ≡ 254
    tou[0, 3, 1] = NAN
    r = block([996, 998, NAN, 2, 4], frozen=[996, 4], tou=tou, modulus=1000)
    assert r.tou[0, 3, 1] == 254 and r.tou_valid.all()
    # the word-order garbage −4e23 is no wrap (−4e23 + 1000 − 1 < 0): still replaced
    r = block([0, 1, -4e23, 3, 4], [0, 0, Q_SUSPECT, 0, 0], max_step=5, modulus=1000)
    np.testing.assert_allclose(r.energy[0], [1, 1, 1, 1])
    assert not (r.rules & Rule.ROLLOVER).any()
