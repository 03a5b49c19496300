"""The wrong-multiplier check on hand-computed cases (analytics/multiplier_check.py)."""

import numpy as np
import pytest

from analytics.multiplier_check import implausible_factors, multiplier_steps

T = 8
NOISE = np.array([0.1, -0.1] * 4)  # the loss moves ±0.1 kWh around its level


def _case(loss_after: float, sign: float = -1.0):
    """One area; one meter advancing 1.0 kWh (secondary) per interval; the ledger's multiplier
    10 before interval 4, 20 from it. The area's loss 0.5 before, `loss_after` after."""
    loss = np.where(np.arange(T) < 4, 0.5, loss_after)[None, :] + NOISE
    secondary = np.ones((1, T))
    mult = np.where(np.arange(T) < 4, 10.0, 20.0)[None, :]
    area = np.zeros((1, T), dtype=int)
    return multiplier_steps(loss, secondary, mult, area, np.array([sign]), window=4,
                            min_intervals=2)  # fmt: skip


def test_a_ledger_only_change_moves_the_loss_by_the_predicted_amount():
    # the CT did not change: sales count 1.0 × 20 instead of 1.0 × 10 from interval 4, so the
    # loss falls by 10: 0.5 → −9.5. expected = −1 · mean(1.0) · (20 − 10) = −10;
    # observed = mean(−9.4, −9.6, −9.4, −9.6) − mean(0.6, 0.4, 0.6, 0.4) = −10;
    # se = √(var/4 + var/4), var = 4·0.1²/3 (ddof 1) → se = 0.0816
    res = _case(-9.5)
    assert list(res.meter) == [0] and list(res.at) == [4]
    assert (res.before[0], res.after[0]) == (10.0, 20.0)
    assert res.expected[0] == pytest.approx(-10.0)
    assert res.observed[0] == pytest.approx(-10.0)
    assert res.stderr[0] == pytest.approx(np.sqrt(2 * (4 * 0.01 / 3) / 4))
    assert res.ratio[0] == pytest.approx(1.0)
    assert res.flagged[0]


def test_a_real_ct_change_leaves_the_loss_and_is_not_flagged():
    res = _case(0.5)  # the CT was swapped: the loss stays at 0.5
    assert res.observed[0] == pytest.approx(0.0, abs=1e-12)
    assert res.ratio[0] == pytest.approx(0.0, abs=1e-12)
    assert not res.flagged[0]


def test_an_area_total_moves_the_loss_the_other_way():
    res = _case(10.5, sign=1.0)  # supply counted 1.0 × 20: the loss rises by 10
    assert res.expected[0] == pytest.approx(10.0)
    assert res.flagged[0]


def test_too_few_computable_intervals_give_no_verdict():
    loss = np.where(np.arange(T) < 4, 0.5, -9.5)[None, :]
    loss[0, 5:] = np.nan  # one interval after the change
    mult = np.where(np.arange(T) < 4, 10.0, 20.0)[None]
    area = np.zeros((1, T), int)
    res = multiplier_steps(loss, np.ones((1, T)), mult, area, [-1.0], window=4, min_intervals=2)
    assert np.isnan(res.observed[0]) and not res.flagged[0]


def test_a_move_to_another_area_is_not_a_multiplier_change():
    mult = np.where(np.arange(T) < 4, 10.0, 20.0)[None, :]
    area = np.where(np.arange(T) < 4, 0, 1)[None, :]
    res = multiplier_steps(np.zeros((2, T)), np.ones((1, T)), mult, area, np.array([-1.0]))
    assert len(res.meter) == 0


def test_an_implausible_estimated_error_implies_a_multiplier():
    # ledger CT 40, field CT 20: the meter-error estimate reads (40/20 − 1)·100 = +100 %;
    # implied multiplier 40 / (1 + 100/100) = 20. A 3 % error is a meter error, not a CT.
    flagged, implied = implausible_factors(np.array([100.0, 3.0, np.nan, -50.0]),
                                           np.array([40.0, 1.0, 30.0, 10.0]))  # fmt: skip
    assert list(flagged) == [True, False, False, True]
    assert implied[0] == 20.0 and implied[3] == 20.0  # 10 / (1 − 0.5)
    assert np.isnan(implied[1]) and np.isnan(implied[2])


def test_bad_shapes_are_refused_in_one_line():
    with pytest.raises(ValueError, match="multiplier_steps"):
        multiplier_steps(np.zeros(3), np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)), [1])
    with pytest.raises(ValueError, match="implausible_factors"):
        implausible_factors(np.zeros(2), np.zeros(3))


def test_register_resolution_is_read_off_the_values():
    from analytics.diagnostics import register_resolution

    regs = np.array(
        [
            [1.23, 1.25, np.nan],  # XXXXXX.XX
            [1.2345, 1.3, 1.5],  # DL/T 698.45 high precision: one value with four digits
            [12.125, 12.5, 13.0],  # three digits
            [5.0, 5.0, 5.0],  # a standing register: not taken for a 1 kWh one
            [np.nan, np.nan, np.nan],  # no values: the common XXXXXX.XX
            [123456.7891, 123456.7892, 123456.79],
        ]
    )
    assert list(register_resolution(regs)) == [0.01, 0.0001, 0.001, 0.01, 0.01, 0.0001]
