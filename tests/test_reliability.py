"""The reliability core against hand-computed cases (analytics/reliability.py)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.reliability import (
    Blocks,
    Kind,
    area_interruptions,
    classify,
    csr,
    expand,
    indices,
    merge_customer,
)

NAN = np.nan
H = 3600
D0 = 1_767_196_800  # 2026-01-01T00:00Z: a period of 30 days from here
BOUNDS = np.array([D0, D0 + 30 * 86400])


def test_merge_overlapping_and_near_records_per_customer():
    # customer 0: [100, 400] and [430, 900] are 30 s apart (≤ tolerance 60): one [100, 900];
    #             [1000, 1100] is 100 s after 900: a second one
    # customer 1: [100, 200] alone (customers are never merged with each other)
    b = merge_customer(
        np.array([0, 0, 0, 1]),
        np.array([430, 100, 1000, 100]),
        np.array([900, 400, 1100, 200.0]),
        tolerance=60,
    )
    assert b.customer.tolist() == [0, 0, 1]
    assert b.start.tolist() == [100, 1000, 100]
    assert b.end.tolist() == [900, 1100, 200]
    assert b.duration.tolist() == [800, 100, 100]


def test_missing_power_up_closed_only_by_a_covering_record():
    # customer 0: meter power-down at 1000 without power-up, the area's monitor saw the
    #             voltage gone 990 … 2000: one interruption 990 … 2000 (closed)
    # customer 1: power-down at 5000 without power-up and nothing else: open, end unknown
    # customer 2: a record [100, 200] and then an open one at 3000: the second stays open
    b = merge_customer(
        np.array([0, 0, 1, 2, 2]),
        np.array([1000, 990, 5000, 100, 3000]),
        np.array([NAN, 2000, NAN, 200, NAN]),
        tolerance=30,
    )
    assert b.customer.tolist() == [0, 1, 2, 2]
    assert b.start.tolist() == [990, 5000, 100, 3000]
    np.testing.assert_array_equal(b.end, [2000, NAN, 200, NAN])
    assert b.open.tolist() == [False, True, False, True]


def test_record_ending_before_it_starts_is_refused():
    with pytest.raises(ValueError, match="record 1: ends before it starts"):
        merge_customer(np.array([0, 1]), np.array([0, 50]), np.array([10, 40.0]), tolerance=0)


def test_expand_area_records_to_its_customers():
    # customers 0..4 in areas [0, 1, 0, -1, 1]: area 0 = {0, 2}, area 1 = {1, 4}
    indptr, members = csr(np.array([0, 1, 0, -1, 1]), 2)
    assert indptr.tolist() == [0, 2, 4] and members.tolist() == [0, 2, 1, 4]
    c, s, e = expand(np.array([1, 0]), np.array([10, 20]), np.array([15, NAN]), indptr, members)
    assert c.tolist() == [1, 4, 0, 2]
    assert s.tolist() == [10, 10, 20, 20]
    np.testing.assert_array_equal(e, [15, 15, NAN, NAN])


def test_classify_by_notice_of_the_area():
    # notices: area 0 planned 1000…5000, area 1 limited 2000…3000 (tolerance 60)
    kind = classify(
        np.array([0, 0, 1, 1, 0]),
        np.array([950, 5001, 2500, 1000, 4000]),
        np.array([0, 1]),
        np.array([1000, 2000]),
        np.array([5000, 3000]),
        np.array([Kind.PLANNED, Kind.LIMITED]),
        tolerance=60,
    )
    # 950 ≥ 1000 − 60: planned; 5001 after its end: unplanned; 2500 in area 1's: limited;
    # 1000 before area 1's notice: unplanned; 4000: planned
    assert kind.tolist() == [1, 0, 2, 0, 1]


def test_area_interruptions_merge_overlapping_customers():
    # area 0: customers 0, 1, 2 out 100…700, 110…800, 130…NaN(open): one interruption,
    #         3 customers, 1 open, end unknown; customer minutes of the known: (600+690)/60
    # area 0: customer 0 again 5000…5100 (100 s < threshold 300): momentary
    # area 1: customer 3 out 100…4000
    b = Blocks(
        customer=np.array([0, 0, 1, 2, 3]),
        start=np.array([100, 5000, 110, 130, 100]),
        end=np.array([700, 5100, 800, NAN, 4000]),
        kind=np.array([0, 0, 1, 0, 0], dtype=np.int8),
    )
    r = area_interruptions(b, np.array([0, 0, 0, 1]), tolerance=60, threshold=300)
    assert r.area.tolist() == [0, 0, 1]
    assert r.start.tolist() == [100, 5000, 100]
    np.testing.assert_array_equal(r.end, [NAN, 5100, 4000])
    assert r.customers.tolist() == [3, 1, 1]
    assert r.open.tolist() == [1, 0, 0]
    np.testing.assert_allclose(r.customer_minutes, [(600 + 690) / 60, 100 / 60, 3900 / 60])
    assert r.kind.tolist() == [Kind.PLANNED, 0, 0]
    assert r.momentary.tolist() == [False, True, False]
    assert r.of_block.tolist() == [0, 1, 0, 0, 2]


def _two_areas():
    """Area A (0): customers 0..99; area B (1): customers 100..109 (110 in all).
    A: customers 0..9 out 60 min (unplanned); customers 10..14 out 2 min (momentary);
       customer 15: power-down without power-up (open).
    B: all 10 out 120 min, planned."""
    cust = np.r_[np.arange(10), np.arange(10, 15), 15, np.arange(100, 110)]
    start = np.r_[np.full(10, D0 + H), np.full(5, D0 + 5 * H), D0 + 6 * H, np.full(10, D0 + H)]
    end = np.r_[np.full(10, D0 + 2 * H), np.full(5, D0 + 5 * H + 120), NAN, np.full(10, D0 + 3 * H)]
    kind = np.r_[np.zeros(16), np.ones(10)].astype(np.int8)
    area_of = np.r_[np.zeros(100), np.ones(10)].astype(int)
    return Blocks(cust, start.astype(np.int64), end.astype(float), kind), area_of


def test_indices_per_area_by_hand():
    b, area_of = _two_areas()
    r = indices(b, area_of, 2, BOUNDS, threshold=300)
    assert r.customers.tolist() == [100, 10]
    assert r.sustained[:, 0].tolist() == [10, 10]
    assert r.momentary[:, 0].tolist() == [5, 0]
    assert r.open[:, 0].tolist() == [1, 0]
    # A: SAIFI 10/100 = 0.1; SAIDI 10·60/100 = 6 min; CAIDI 600/10 = 60; MAIFI 5/100
    # B: SAIFI 10/10 = 1; SAIDI 10·120/10 = 120 min; CAIDI 120; MAIFI 0
    np.testing.assert_allclose(r.saifi[:, 0], [0.1, 1.0])
    np.testing.assert_allclose(r.saidi[:, 0], [6.0, 120.0])
    np.testing.assert_allclose(r.caidi[:, 0], [60.0, 120.0])
    np.testing.assert_allclose(r.maifi[:, 0], [0.05, 0.0])
    # ASAI: 1 − minutes / (N · 30 days · 1440 min): A 1 − 600/4,320,000; B 1 − 1200/432,000
    np.testing.assert_allclose(r.asai[:, 0], [1 - 600 / 4_320_000, 1 - 1200 / 432_000])
    np.testing.assert_allclose(r.rs1[:, 0], 100 * r.asai[:, 0])
    # RS-3 leaves out B's planned outage: 100 %; A's is unplanned: the same as RS-1
    np.testing.assert_allclose(r.rs3[:, 0], [100 * (1 - 600 / 4_320_000), 100.0])


def test_system_saidi_is_customer_weighted_not_a_sum_of_areas():
    b, area_of = _two_areas()
    system = indices(b, np.zeros(110, dtype=int), 1, BOUNDS, threshold=300)
    # (10·60 + 10·120) customer minutes / 110 customers = 16.3636… min, not 6 + 120 = 126
    np.testing.assert_allclose(system.saidi[0, 0], 1800 / 110)
    np.testing.assert_allclose(system.saifi[0, 0], 20 / 110)
    np.testing.assert_allclose(system.caidi[0, 0], 1800 / 20)
    np.testing.assert_allclose(system.asai[0, 0], 1 - 1800 / (110 * 30 * 1440))
    np.testing.assert_allclose(system.rs3[0, 0], 100 * (1 - 600 / (110 * 30 * 1440)))
    areas = indices(b, area_of, 2, BOUNDS, threshold=300)
    assert areas.saidi[:, 0].sum() == pytest.approx(126.0)


def test_periods_hold_interruptions_by_their_start():
    # one customer of one; out 23:00 … 01:00 across two days: all 120 min in the first day
    b = Blocks(np.array([0]), np.array([D0 + 23 * H]), np.array([D0 + 25 * H + 0.0]), np.zeros(1))
    days = np.array([D0, D0 + 86400, D0 + 2 * 86400])
    r = indices(b, np.array([0]), 1, days, threshold=300)
    assert r.saidi.tolist() == [[120.0, 0.0]]
    assert r.sustained.tolist() == [[1, 0]]
    # no interruptions at all in the second day: CAIDI undefined, ASAI 1
    assert np.isnan(r.caidi[0, 1]) and r.asai[0, 1] == 1.0


def test_open_record_just_after_a_known_end_is_that_end_by_another_clock():
    # customer 0: the concentrator's record 1000 … 1005 (a 5 s outage); the meter's clock is
    # 10 s fast: its power-down at 1010, power-up lost. 1010 ≤ 1005 + tolerance 60: closed at
    # 1005. Customer 1: an open record 100 s after a known end (> 60): a second, open one.
    b = merge_customer(
        np.array([0, 0, 1, 1]),
        np.array([1000, 1010, 1000, 1105]),
        np.array([1005, NAN, 1005, NAN]),
        tolerance=60,
    )
    assert b.customer.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(b.end, [1005, 1005, NAN])


def test_no_records_no_interruptions_indices_zero():
    b = merge_customer(np.zeros(0, int), np.zeros(0, int), np.zeros(0), tolerance=60)
    r = area_interruptions(b, np.array([0, 0]), tolerance=60, threshold=300)
    assert r.area.size == 0 and r.end.size == 0
    x = indices(b, np.array([0, 0]), 1, BOUNDS, threshold=300)
    assert x.saifi.tolist() == [[0.0]] and x.asai.tolist() == [[1.0]] and np.isnan(x.caidi[0, 0])
