"""analytics/mapping.py on a synthetic feeder generated here."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.mapping import check_meter_areas


def feeder(seed: int, areas: int = 20, per_area: int = 25, days: int = 7, wrong: int = 10):
    """One feeder: an MV voltage shared by all areas (daily swing plus a random walk); each
    area's LV voltage = its transformer's tap × MV − the drop of the area's own load; each
    meter = its area's voltage − the drop of its own load on its service line + noise,
    rounded to 0.1 V like a meter. `wrong` meters are assigned to another area."""
    rng = np.random.default_rng(seed)
    t = days * 96
    h = (np.arange(t) % 96) / 4.0
    mv = 232 + 2.0 * np.sin(h / 24 * 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, t))
    n = areas * per_area
    area_of = np.repeat(np.arange(areas), per_area)
    evening = 0.4 + 0.9 * np.exp(-(((h - 20) / 2.5) ** 2))
    load = rng.uniform(0.3, 1.5, n)[:, None] * evening * rng.gamma(2.0, 0.5, (n, t))  # kW
    area_load = np.zeros((areas, t))
    np.add.at(area_load, area_of, load)
    z_area = rng.uniform(0.15, 0.3, areas)  # V per kW of area load
    lv = rng.uniform(0.98, 1.02, areas)[:, None] * mv - z_area[:, None] * area_load
    z_meter = rng.uniform(0.1, 0.5, n)  # V per kW of the meter's own load
    volts = lv[area_of] - z_meter[:, None] * load + rng.normal(0, 0.2, (n, t))
    volts = np.round(volts, 1)
    assigned = area_of.copy()
    bad = rng.choice(n, wrong, replace=False)
    assigned[bad] = (area_of[bad] + rng.integers(1, areas, wrong)) % areas
    return volts, np.round(lv, 1), assigned, area_of, bad


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_misassigned_meters_found(seed):
    volts, ref, assigned, truth, bad = feeder(seed)
    r = check_meter_areas(volts, ref, assigned)
    wrong = np.zeros(len(assigned), bool)
    wrong[bad] = True
    found = r.flagged[wrong].mean()
    false_alarms = r.flagged[~wrong].mean()
    assert found >= 0.95, found
    assert false_alarms <= 0.01, false_alarms
    # the evidence: the best other area is where the meter really is, better correlated
    hit = wrong & r.flagged
    np.testing.assert_array_equal(r.best_area[hit], truth[hit])
    assert (r.best_corr[hit] > r.own_corr[hit] + 0.1).all()
    assert (r.own_overlap[hit] == volts.shape[1] - 1).all()
    assert (r.best_overlap[hit] == volts.shape[1] - 1).all()


def test_gaps_candidates_and_bad_input():
    volts, ref, assigned, truth, bad = feeder(4, areas=6, per_area=10, wrong=3)
    rng = np.random.default_rng(0)
    volts[rng.random(volts.shape) < 0.1] = np.nan  # 10 % of readings missing
    r = check_meter_areas(volts, ref, assigned)
    assert r.flagged[bad].all()
    assert (r.own_overlap < volts.shape[1] - 1).all()  # the gaps are counted out
    # restricted candidates: a meter's true area not among them → nothing better to offer
    cand = np.ones((len(assigned), ref.shape[0]), bool)
    cand[bad, truth[bad]] = False
    r2 = check_meter_areas(volts, ref, assigned, cand)
    assert not (r2.best_area[bad] == truth[bad]).any()
    # too little overlap: no verdict either way
    r3 = check_meter_areas(volts, ref, assigned, min_overlap=10_000)
    assert not r3.flagged.any() and (r3.best_area == -1).all()
    with pytest.raises(ValueError, match="assigned outside"):
        check_meter_areas(volts, ref, np.full(len(assigned), 99))
