"""The world's realism for the meter-error work: DL/T 698.45 high-precision registers where a
concentrator reads the meter, two decimals on Modbus and DL/T 645; appliance-like loads."""

from datetime import UTC, datetime

import numpy as np
import pytest

from simulators.world import WorldSpec, build_world
from simulators.world.loads import CLASSES

START = datetime(2026, 10, 31, 16, tzinfo=UTC)


def spec(**kw) -> WorldSpec:
    base = {"seed": 3, "start": START, "days": 2, "feeders": 1, "areas_per_feeder": 2,
            "meters_per_area": 10, "precise_decimals": 4, "bus_areas": ("f01-a02",)}  # fmt: skip
    return WorldSpec(**{**base, **kw})


def test_registers_keep_the_digits_of_the_path_that_reads_them():
    w = build_world(spec())
    g, t = w.grid, w.truth
    area = np.asarray(g.areas)[np.maximum(g.meter_area, 0)]
    by_concentrator = (area == "f01-a01") & (g.role != "feeder_head")  # customers and total
    assert (t.decimals[by_concentrator] == 4).all()
    assert (t.decimals[~by_concentrator] == 2).all()  # head, dedicated, the DL/T 645 area
    four = t.register[by_concentrator]
    assert np.array_equal(four, np.round(four, 4)) and not np.array_equal(four, np.round(four, 2))
    assert np.array_equal(t.register[~by_concentrator], np.round(t.register[~by_concentrator], 2))
    lag = (t.register_true - t.register)[by_concentrator]  # floored to 0.0001, never ahead
    assert (lag > -1e-6).all() and (lag < 1e-4 + 1e-6).all()
    # the concentrator uploads what the model keeps; a DL/T 645 meter serves two decimals
    m = w.meter_model("f01-a01-c001")
    assert m.register_decimals == 4
    assert m.energy_kwh(float(t.boundaries[5])) == t.register[g.index("f01-a01-c001"), 5]
    assert w.meter_model("f01-a02-c001").register_decimals == 2


def test_a_readout_that_would_lose_digits_is_refused_in_one_line():
    w = build_world(spec())
    inv = w.inventory(area_totals="local", bus_ports={"f01-a02": "/dev/pts/9"})
    assert [b["name"] for b in inv["bus"]] == ["f01-a02-485"]
    with pytest.raises(ValueError, match=r"name them in WorldSpec\.bus_areas"):
        w.inventory(area_totals="local", bus_ports={"f01-a01": "/dev/pts/9"})
    with pytest.raises(ValueError, match="read them locally"):
        w.inventory()  # area totals on Modbus: two decimals
    with pytest.raises(ValueError, match="bus_areas"):
        build_world(spec(bus_areas=("f09-a01",)))
    with pytest.raises(ValueError, match="precise_decimals 5"):
        spec(precise_decimals=5)
    # without precise_decimals every meter keeps register_decimals, as before
    plain = build_world(spec(precise_decimals=None))
    assert (plain.truth.decimals == 2).all()
    assert plain.inventory()["device"]


def test_household_loads_are_spiky_like_appliances():
    w = build_world(spec(days=14, areas_per_feeder=1, meters_per_area=200, bus_areas=()))
    g, t = w.grid, w.truth
    homes = np.flatnonzero((g.role == "customer") & (g.cls == CLASSES.index("residential")))
    e = t.energy[homes]
    # the part of a household's 15-min energy its own daily pattern does not explain: each
    # interval against the mean of the same quarter hour over the fortnight
    daily = e.reshape(len(homes), -1, 96).mean(axis=1)
    indep = e - np.tile(daily, 14)
    ratio = indep.std(axis=1) / e.mean(axis=1)
    assert np.median(ratio) > 0.7  # of the order of the mean (measured 1.0; 0.39 without)
    # spikes: the top 1 % of a household's intervals are several times its mean (5.8; 3.2
    # without the appliances)
    assert np.median(np.percentile(e, 99, axis=1) / e.mean(axis=1)) > 4.5
