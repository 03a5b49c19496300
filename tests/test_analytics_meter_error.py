"""analytics/meter_error.py on synthetic areas generated here, with known injected errors."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.meter_error import estimate_meter_errors, line_drop_slope

CLASS = 2.0  # every meter class 2: ±2 %


def area(
    n: int,
    seed: int,
    days: int = 14,
    quantum: float = 0.0,
    scale=(0.4, 1.0),
    twins=0.0,
    service=0.0,
):
    """An area of n residential-like meters: a daily shape per meter (evening, daytime or
    flat), times independent gamma noise per interval; errors of ±1…5 % injected on a tenth
    of the meters; supply S = ΣL + c + k·S² (fixed plus load-dependent loss) measured with
    0.01 kWh noise, or (quantum > 0) every meter read through registers rounded to quantum.
    twins > 0: meter 1's load is meter 0's times (1 + twins·noise), no injected error on
    either (twins = 1e-9 or so: the same shape up to rounding). service > 0: each meter has
    its own service line losing r_i·L_i² (about `service` of its energy at its mean load),
    upstream of the meter, so in the supply."""
    rng = np.random.default_rng(seed)
    t = days * 96
    h = (np.arange(t) % 96) / 4.0
    shapes = np.stack(
        [
            0.5 + 0.8 * np.exp(-(((h - 20) / 2.5) ** 2)) + 0.4 * np.exp(-(((h - 8) / 2) ** 2)),
            0.3 + 1.0 * ((h > 8) & (h < 18)),
            0.6 + 0.3 * np.sin(h / 24 * 2 * np.pi),
        ]
    )
    load = (
        rng.uniform(*scale, n)[:, None]
        * shapes[rng.integers(0, 3, n)]
        * rng.gamma(2.0, 0.5, (n, t))
    )
    if twins:
        load[1] = 1.5 * load[0] * (1 + twins * rng.standard_normal(t))
    err = np.zeros(n)
    hit = rng.choice(np.arange(2 if twins else 0, n), max(n // 10, 1), replace=False)
    err[hit] = rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5], hit.size)
    measured = load * (1 + err[:, None] / 100)
    total = load.sum(axis=0)
    c, k = 0.001 * n, 0.03 / total.mean()  # ≈ 3 % load loss at the mean
    lines = 0.0
    if service:
        r = rng.uniform(0.2, 1.0, n)[:, None] * service / load.mean(axis=1, keepdims=True)
        lines = (r * load**2).sum(axis=0)
    a = total + c + lines
    supply = (1 - np.sqrt(1 - 4 * k * a)) / (2 * k)  # solves S = ΣL + lines + c + k·S²
    if quantum:
        measured = through_registers(measured, quantum, rng)
        supply = through_registers(supply[None], quantum, rng)[0]
    else:
        supply = supply + rng.normal(0, 0.01, t)
    return supply, measured, err, c, k


def through_registers(energy, quantum, rng):
    reg = np.cumsum(np.column_stack([rng.uniform(0, 1e4, len(energy)), energy]), axis=1)
    return np.diff(np.round(reg / quantum) * quantum, axis=1)


@pytest.mark.parametrize("n", [50, 200])
def test_injected_errors_recovered_with_covering_intervals(n):
    supply, energy, err, c, k = area(n, seed=n)
    r = estimate_meter_errors(supply, energy, np.full(n, CLASS))
    assert r.identifiable.all()
    injected = err != 0
    dev = np.abs(r.error_pct - err)
    assert dev[injected].max() <= 0.5, dev[injected].max()
    assert dev.max() <= 0.75  # the others too, from ~0.13 pp standard errors
    covered = (r.ci_low <= err) & (err <= r.ci_high)
    # 95 % intervals: the count covering is Binomial(n, 0.95); below mean − 3 sd (≈ 0.1 %
    # chance for honest intervals) the intervals are too narrow
    assert covered.sum() >= n * 0.95 - 3 * np.sqrt(n * 0.95 * 0.05), covered.mean()
    # flagged exactly when the whole CI lies beyond the class; every meter ≥ 3 % off is
    # flagged, no meter within its class (|err| ≤ 2) is
    beyond = (r.ci_low > CLASS) | (r.ci_high < -CLASS)
    np.testing.assert_array_equal(r.flagged, beyond)
    assert r.flagged[np.abs(err) >= 3].all()
    assert not r.flagged[np.abs(err) <= 1].any()
    # the loss terms come back too
    assert r.fixed_loss == pytest.approx(c, abs=0.05 * n * 0.01 + 0.02)
    assert r.load_coeff == pytest.approx(k, rel=0.2)


def test_collinear_meters_not_identifiable():
    n = 50
    for twins in (1e-12, 1e-4):  # meter 1 = 1.5 × meter 0, exactly / up to small noise
        supply, energy, err, _, _ = area(n, seed=3, twins=twins)
        r = estimate_meter_errors(supply, energy, np.full(n, CLASS))
        assert not r.identifiable[:2].any(), twins
        assert np.isnan(r.error_pct[:2]).all() and np.isnan(r.ci_low[:2]).all()
        assert not r.flagged[:2].any()
        # the others are still estimated, within the same precision
        assert r.identifiable[2:].all()
        assert np.abs(r.error_pct[2:] - err[2:]).max() <= 0.75


def test_service_line_losses_need_their_own_terms():
    # every customer on its own service line losing ≈ 2 % of its energy as r_i·L_i²: the
    # plain model mistakes that load-dependent loss for meter errors; with service_loss=True
    # (a κ_i·E_i² column per meter) the errors come back unbiased
    n = 50
    supply, energy, err, _, _ = area(n, seed=8, service=0.02)
    plain = estimate_meter_errors(supply, energy, np.full(n, CLASS))
    lines = estimate_meter_errors(supply, energy, np.full(n, CLASS), service_loss=True)
    assert lines.identifiable.all()
    injected = err != 0
    assert np.abs(lines.error_pct - err)[injected].max() <= 0.5
    covered = (lines.ci_low <= err) & (err <= lines.ci_high)
    assert covered.sum() >= n * 0.95 - 3 * np.sqrt(n * 0.95 * 0.05)
    assert not lines.flagged[np.abs(err) <= 1].any()
    plain_covered = (plain.ci_low <= err) & (err <= plain.ci_high)
    assert plain_covered.mean() < 0.6  # the plain model is visibly wrong here


def test_rows_with_gaps_dropped_and_bad_input():
    n = 30
    supply, energy, err, _, _ = area(n, seed=5)
    energy[3, ::7] = np.nan
    supply[::11] = np.nan
    r = estimate_meter_errors(supply, energy, np.full(n, CLASS))
    t = supply.size
    assert r.rows == t - len(set(range(0, t, 7)) | set(range(0, t, 11)))
    assert np.abs(r.error_pct - err).max() <= 0.75
    with pytest.raises(ValueError, match="supply \\(T,\\)"):
        estimate_meter_errors(supply, energy[:, :-1], np.full(n, CLASS))


def test_register_rounding_bias_corrected():
    # small loads read through 0.01 kWh registers: rounding noise in the regressors biases
    # every error upwards (attenuation of θ); the correction with the known q²/6 removes it
    n = 12
    supply, energy, err, _, _ = area(n, seed=6, days=56, quantum=0.01, scale=(0.03, 0.06))
    plain = estimate_meter_errors(supply, energy, np.full(n, CLASS), max_ci_pct=50)
    fixed = estimate_meter_errors(supply, energy, np.full(n, CLASS), max_ci_pct=50, quantum=0.01)
    bias_plain = np.mean(plain.error_pct - err)
    bias_fixed = np.mean(fixed.error_pct - err)
    assert bias_plain > 3 * np.mean(plain.stderr_pct) / np.sqrt(n)  # a real, visible bias
    assert abs(bias_fixed) < abs(bias_plain) / 3


def test_line_drop_slope_hand_computed():
    # meter 0: ΔV = 0.5 + 100·E/V exactly (a 0.5 V reading offset, ρ = 100 V²/kWh):
    #   E/V = 0, 0.01, 0.02, 0.03 → ΔV = 0.5, 1.5, 2.5, 3.5 → V = 230 − ΔV = 229.5, 228.5,
    #   227.5, 226.5 → E = (E/V)·V = 0, 2.285, 4.55, 6.795; slope of ΔV on E/V: 100
    # meter 1: the same E/V but ΔV falling (3.5 … 0.5): slope −100, clipped at 0
    # meter 2: voltage constant (no curve, filled): NaN
    # interval 4: bus missing, ignored by all
    bus = np.array([230.0, 230.0, 230.0, 230.0, np.nan])
    x = np.array([0.0, 0.01, 0.02, 0.03, 0.04])
    v0 = np.array([229.5, 228.5, 227.5, 226.5, 225.0])
    v1 = v0[[3, 2, 1, 0, 4]]
    v2 = np.full(5, 230.0)
    volts = np.stack([v0, v1, v2])
    rho = line_drop_slope(bus, volts, x * volts)
    assert rho[0] == pytest.approx(100.0)
    assert rho[1] == 0.0
    assert np.isnan(rho[2])
    # a bus per meter (its phase's): meter 0's 0.4 V higher (a fixed unbalance) → ΔV = 0.9 +
    # 100·E/V, the same slope; the others as before
    per_meter = np.stack([bus + 0.4, bus, bus])
    np.testing.assert_allclose(line_drop_slope(per_meter, volts, x * volts)[:2], [100.0, 0.0])


def lined_area(n: int, seed: int, days: int = 14):
    """`area` with each meter on its own service line whose loss follows its measured drop:
    ΔV_i = ρ_i·L_i/V_i, loss_i = c_i·ρ_i·L_i²/V_i² with c_i ∈ [1, 1.25] (the power factor's
    share, unknown to the estimator), ≈ 2 % of the energy at ρ's top; voltages read to
    0.1 V with 0.05 V noise and a per-meter offset of up to ±1 V."""
    _, measured, err, c, k = area(n, seed=seed, days=days)
    rng = np.random.default_rng(seed + 1000)
    load = measured / (1 + err[:, None] / 100)
    t = load.shape[1]
    v_bus = 232.0 + rng.normal(0.0, 1.5, t)
    rho = rng.uniform(0.2, 1.0, n)[:, None] * 0.02 * 230.0**2 / load.mean(axis=1, keepdims=True)
    v = np.repeat(v_bus[None], n, axis=0)
    for _ in range(3):  # V = V_bus − ρ·L/V, a fixed point
        v = v_bus - rho * load / v
    lines = (rng.uniform(1.0, 1.25, n)[:, None] * rho * load**2 / v**2).sum(axis=0)
    a = load.sum(axis=0) + c + lines
    supply = (1 - np.sqrt(1 - 4 * k * a)) / (2 * k) + rng.normal(0, 0.01, t)
    volts = np.round(v + rng.uniform(-1.0, 1.0, n)[:, None] + rng.normal(0, 0.05, v.shape), 1)
    bus = np.round(v_bus + rng.normal(0, 0.05, t), 1)
    return supply, measured, err, volts, bus


def test_drop_prior_keeps_intervals_honest_and_separates_more_meters():
    # 200 meters with ≈ 2 % service-line losses whose pf share (1…1.25) the estimator does
    # not know: with the prior from each meter's drop the errors still come back within
    # the intervals at their stated coverage; on 5 days (480 rows for 402 unknowns without
    # the prior) it separates meters the free κ_i model has to call not identifiable
    n = 200
    acc = np.full(n, CLASS)
    for days in (14, 5):
        supply, energy, err, volts, bus = lined_area(n, seed=11, days=days)
        free = estimate_meter_errors(supply, energy, acc, service_loss=True,
                                     service_voltage=volts)  # fmt: skip
        prior = estimate_meter_errors(supply, energy, acc, service_loss=True,
                                      service_voltage=volts, bus_voltage=bus)  # fmt: skip
        ok = prior.identifiable
        covered = (prior.ci_low <= err) & (err <= prior.ci_high)
        k = ok.sum()
        assert covered[ok].sum() >= k * 0.95 - 3 * np.sqrt(k * 0.95 * 0.05), covered[ok].mean()
        assert np.nanmax(np.abs(prior.error_pct - err)) <= 3 * np.nanmax(prior.stderr_pct) * 1.96
        assert not prior.flagged[np.abs(err) <= 1].any()
        if days == 14:
            assert ok.all() and np.abs(prior.error_pct - err).max() <= 0.75
        else:
            assert ok.mean() >= free.identifiable.mean() + 0.1, (
                ok.mean(),
                free.identifiable.mean(),
            )
    # the slopes given (as the job computes them from curves before filling their gaps) are
    # the ones it would compute itself from complete curves
    rho = line_drop_slope(bus, volts, energy)
    given = estimate_meter_errors(supply, energy, acc, service_loss=True, service_voltage=volts,
                                  bus_voltage=bus, drop_slope=rho)  # fmt: skip
    np.testing.assert_allclose(given.error_pct, prior.error_pct, atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="drop_slope"):
        estimate_meter_errors(supply, energy, acc, service_loss=True, service_voltage=volts,
                              bus_voltage=bus, drop_slope=np.ones(3))  # fmt: skip
    with pytest.raises(ValueError, match="bus_voltage"):
        estimate_meter_errors(supply, energy, acc, service_loss=True, service_voltage=volts,
                              bus_voltage=bus[:-1])  # fmt: skip
