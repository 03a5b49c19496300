"""The simulated world: deterministic, energy conserved exactly, faults as recorded."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridread.inventory import parse_inventory
from simulators.world import Fault, WorldSpec, build_world
from simulators.world.faults import MODULUS
from simulators.world.spec import FAULT_KINDS

START = datetime(2026, 10, 31, 16, tzinfo=UTC)  # local (UTC+8) midnight of 1 November
DAY1 = START + timedelta(days=1)


def small(**kw) -> WorldSpec:
    base = {"seed": 5, "start": START, "days": 3, "feeders": 2, "areas_per_feeder": 2,
            "meters_per_area": 30}  # fmt: skip
    return WorldSpec(**{**base, **kw})


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = build_world(small()), build_world(small()), build_world(small(seed=6))
    assert np.array_equal(a.truth.register, b.truth.register)
    assert np.array_equal(a.truth.voltage, b.truth.voltage)
    assert a.inventory() == b.inventory()
    assert not np.array_equal(a.truth.energy, c.truth.energy)


def test_energy_is_conserved_exactly_in_the_ground_truth():
    w = build_world(small())
    g, t = w.grid, w.truth
    customers, totals, heads = (g.role == r for r in ("customer", "area_total", "feeder_head"))
    # area: total meter = Σ customers' consumption + line I²R + fixed part
    sums = np.zeros_like(t.lv_loss)
    np.add.at(sums, g.meter_area[customers], t.energy[customers])
    supply = np.zeros_like(sums)
    supply[g.meter_area[totals]] = t.energy[totals]
    public = ~g.area_dedicated
    np.testing.assert_allclose(
        supply[public], (sums + t.lv_loss + t.fixed_loss)[public], rtol=1e-12
    )
    assert (t.lv_loss[public] > 0).all() and (t.lv_loss[~public] == 0).all()
    # feeder: head = Σ area totals (public and dedicated) + transformer losses + MV I²R
    head = t.energy[heads]
    per_feeder = np.zeros_like(head)
    np.add.at(per_feeder, g.area_feeder, supply + t.trafo_loss)
    np.testing.assert_allclose(head, per_feeder + t.mv_loss, rtol=1e-12)
    # registers: an ideal register advances by the energy ÷ multiplier
    np.testing.assert_allclose(
        np.diff(t.register_true, axis=1) * g.multiplier[:, None], t.energy, rtol=1e-9, atol=1e-9
    )
    # shown registers are floored to 0.01: never ahead of the ideal, less than 0.01 behind
    lag = t.register_true - t.register
    assert (lag > -1e-6).all() and (lag < 0.01 + 1e-6).all()
    assert np.array_equal(t.register, np.round(t.register, 2))


def test_loads_are_not_collinear_and_voltages_follow_the_area():
    w = build_world(small(days=7, meters_per_area=40, feeders=1))
    g, t = w.grid, w.truth
    customers = np.flatnonzero((g.role == "customer") & (g.meter_area == 0))
    corr = np.corrcoef(t.energy[customers])
    off = corr[~np.eye(len(customers), dtype=bool)]
    assert off.max() < 0.9  # no two customers' loads explain each other
    # de-trended voltage changes correlate within an area more than across areas
    dv = np.diff(t.voltage, axis=1)
    a0 = np.flatnonzero((g.role == "customer") & (g.meter_area == 0))[:10]
    a1 = np.flatnonzero((g.role == "customer") & (g.meter_area == 1))[:10]
    c = np.corrcoef(dv[np.r_[a0, a1]])
    within = c[:10, :10][~np.eye(10, dtype=bool)].mean()
    across = c[:10, 10:].mean()
    assert within > across + 0.2
    # the transformer's drop with load: the area's voltage is lower when its load is higher
    total = np.flatnonzero(g.role == "area_total")[0]
    assert np.corrcoef(t.energy[total], t.voltage[total])[0, 1] < 0


def faulted(*faults: Fault) -> tuple:
    w = build_world(small(faults=faults))
    return w, [w.grid.index(f.meter) for f in faults]


def test_energy_faults_change_what_the_meter_shows_from_their_start():
    k = 96  # DAY1 is boundary 96
    faults = (
        Fault("theft", "f01-a01-c003", DAY1, {"share": 0.3}),
        Fault("meter_error", "f01-a01-c004", DAY1, {"pct": 3.0}),
        Fault("stopped", "f01-a01-c005", DAY1),
        Fault("reverse_wiring", "f01-a01-c006", DAY1),
    )
    w, (theft, fast, stopped, rev) = faulted(*faults)
    t, m = w.truth, w.grid.multiplier
    # theft: the meter sees 70 % of the load after the start, all of it before
    np.testing.assert_allclose(t.seen[theft, k:], 0.7 * t.energy[theft, k:])
    np.testing.assert_allclose(t.seen[theft, :k], t.energy[theft, :k])
    # meter error +3 %: the register advances 1.03 × the energy (÷ multiplier, floored)
    adv = t.register[fast, -1] - t.register[fast, k]
    expected = 1.03 * t.energy[fast, k:].sum() / m[fast]
    assert abs(adv - expected) < 0.01 + 1e-9
    # stopped: the register stands still; reverse wiring: import frozen, export counts
    assert (t.register[stopped, k:] == t.register[stopped, k]).all()
    assert (t.register[rev, k:] == t.register[rev, k]).all()
    assert t.export[rev, k] == 0.0
    assert abs(t.export[rev, -1] - t.energy[rev, k:].sum() / m[rev]) < 0.01 + 1e-9
    # the ground truth says when and what, and the loss change it causes in the area
    records = {r["meter"]: r for r in t.fault_records()}
    r = records["f01-a01-c003"]
    assert (r["kind"], r["start"], r["params"], r["area"]) == ("theft", DAY1, {"share": 0.3},
                                                                "f01-a01")  # fmt: skip
    [sig] = r["signature"]
    assert sig["group"] == "f01-a01" and sig["level"] == "area"
    # the area's loss rises by the stolen 30 % (± the register's 0.01 kWh per interval)
    assert sig["mean_delta_kwh"] == pytest.approx(0.3 * t.energy[theft, k:].mean(), abs=0.01)
    [sig] = records["f01-a01-c005"]["signature"]
    assert sig["mean_delta_kwh"] == pytest.approx(t.energy[stopped, k:].mean(), abs=0.01)
    assert np.all(np.abs(sig["delta_loss"][:k]) <= 0.01 * m[stopped] + 1e-9)


def test_register_faults_rollover_reset_clock_drift():
    faults = (
        Fault("rollover", "f01-a02-c001", DAY1),
        Fault("reset", "f01-a02-c002", DAY1),
        Fault("clock_drift", "f01-a02-c003", DAY1, {"seconds_per_day": 900.0}),
    )
    w, (roll, reset, drift) = faulted(*faults)
    t, k = w.truth, 96
    # rollover: below 999999.99 up to boundary 95, wrapped past 0 at 96
    assert t.register[roll, k - 1] > MODULUS - 1 and t.register[roll, k] < 1
    assert t.modulus[roll] == MODULUS
    e = t.measured[roll]
    np.testing.assert_allclose(e, t.energy[roll], atol=0.01 * w.grid.multiplier[roll] + 1e-9)
    # reset: 0 at the start, the interval before it lost (NaN), counting on from 0 after
    assert t.register[reset, k] == 0.0 and np.isnan(t.measured[reset, k - 1])
    assert np.isfinite(t.measured[reset, k:]).all()
    # clock drift 900 s/day: a day after the start the meter is one interval ahead, so its
    # point labelled boundary 192 holds the true register of boundary 191
    assert t.register[drift, k + 96] == np.round(np.floor(t.register_true[drift, k + 95] * 100
                                                          + 1e-6) / 100, 2)  # fmt: skip
    assert t.register[drift, k] == np.round(np.floor(t.register_true[drift, k] * 100 + 1e-6)
                                            / 100, 2)  # fmt: skip


def test_inventory_faults_and_their_signatures():
    faults = (
        Fault("wrong_multiplier", "f01-a01-total", DAY1, {"ct_ratio": 60}),
        Fault("wrong_area", "f01-a01-c010", None, {"area": "f01-a02"}),
    )
    w, (total, moved) = faulted(*faults)
    g, t = w.grid, w.truth
    inv = w.inventory()
    rows = [r for r in inv["metering_point"] if r["meter"] == "f01-a01-total"]
    assert [r["ct_ratio"] for r in rows] == [g.ct[total], 60]
    assert rows[0]["valid_to"] == DAY1 == rows[1]["valid_from"]
    [row] = [r for r in inv["metering_point"] if r["meter"] == "f01-a01-c010"]
    assert row["area"] == "f01-a02" and t.real_area("f01-a01-c010") == "f01-a01"
    records = {r["meter"]: r for r in t.fault_records()}
    area_sig, feeder_sig = records["f01-a01-total"]["signature"]
    # supply read with CT 60 instead of the true one: the area's loss jumps by
    # E_secondary × (60 − ct) per interval, and the feeder's by the opposite
    e_sec = t.measured[total] / g.multiplier[total]
    jump = e_sec[96:] * (60 - g.ct[total])
    np.testing.assert_allclose(area_sig["delta_loss"][96:], jump)
    np.testing.assert_allclose(feeder_sig["delta_loss"][96:], -jump)
    assert (area_sig["delta_loss"][:96] == 0).all()
    own, other = records["f01-a01-c010"]["signature"]
    assert (own["group"], other["group"]) == ("f01-a01", "f01-a02")
    np.testing.assert_allclose(own["delta_loss"], t.measured[moved])
    np.testing.assert_allclose(other["delta_loss"], -t.measured[moved])


def test_ground_truth_balance_is_what_the_meters_measured():
    w = build_world(small(faults=(Fault("theft", "f02-a01-c007", DAY1, {"share": 0.5}),)))
    t, g = w.truth, w.grid
    area = t.area_balance()
    j = g.areas.index("f02-a01")
    total = g.index("f02-a01-total")
    members = np.flatnonzero((g.meter_area == j) & (g.role == "customer"))
    supply = np.diff(t.register[total]) * g.multiplier[total]
    sales = (np.diff(t.register[members], axis=1) * g.multiplier[members, None]).sum(axis=0)
    np.testing.assert_allclose(area["supply"][j], supply)
    np.testing.assert_allclose(area["loss"][j], supply - sales)
    # measured loss = technical loss + the theft, within the registers' 0.01 kWh steps
    theft = t.fault_records()[0]["signature"][0]["delta_loss"]
    slack = 0.01 * (g.multiplier[total] + g.multiplier[members].sum())
    assert np.all(np.abs(area["loss"][j] - area["technical"][j] - theft) <= slack + 1e-9)
    feeder = t.feeder_balance()
    assert np.all(np.abs(feeder["loss"] - feeder["technical"]) <= 0.01 * 6000 + 1e-9)


def test_world_inventory_is_a_valid_device_inventory():
    w = build_world(small())
    inv = w.inventory(modbus_port=5021, bus_ports={"f02-a02": "/dev/pts/9"})
    parsed = parse_inventory(inv, source="world", base_dir=Path("."))
    names = {r["name"] for r in parsed.rows()}
    assert names >= set(w.grid.meters)
    assert {d["unit_id"] for d in inv["device"]} == set(range(1, len(inv["device"]) + 1))
    [bus] = inv["bus"]
    assert bus["port"] == "/dev/pts/9" and len(bus["meter"]) == 30
    assert len(inv["concentrator"]) == 3
    # every meter has one metering point and one asset; dedicated areas have no customers
    assert sorted(r["meter"] for r in inv["metering_point"]) == sorted(w.grid.meters)
    kinds = {a["name"]: a["kind"] for a in inv["area"]}
    assert kinds["f01-d01"] == "dedicated"
    assert not [r for r in inv["metering_point"]
                if r.get("area") == "f01-d01" and r["role"] == "customer"]  # fmt: skip


def test_bad_specs_are_refused_in_one_line():
    with pytest.raises(ValueError, match="theft on m: missing"):
        Fault("theft", "m")
    with pytest.raises(ValueError, match="expected one of"):
        Fault("gremlins", "m")
    with pytest.raises(ValueError, match="15-minute boundary"):
        WorldSpec(start=START + timedelta(minutes=7))
    with pytest.raises(KeyError, match="no meter 'nope'"):
        build_world(small(faults=(Fault("stopped", "nope"),)))


def check_loss_identities(w):
    """Loss as an analysis would compute it (inventory multipliers and areas in force per
    interval) = the measured loss + the inventory faults' signatures; the measured loss =
    the technical loss + the energy faults' signatures within the registers' 0.01 steps."""
    g, t = w.grid, w.truth
    n, T = t.energy.shape
    mult = np.empty((n, T))
    area = np.full((n, T), -1)
    mid = t.boundaries[:-1]  # an interval belongs to the row in force at its start
    for row in w.inventory()["metering_point"]:
        i = g.index(row["meter"])
        lo = row["valid_from"].timestamp() if "valid_from" in row else -np.inf
        hi = row["valid_to"].timestamp() if "valid_to" in row else np.inf
        on = (mid >= lo) & (mid < hi)
        mult[i, on] = row["ct_ratio"] * row["pt_ratio"]
        area[i, on] = g.areas.index(row["area"]) if "area" in row else -1
    e = t.measured / g.multiplier[:, None] * mult  # registers' advance × inventory multiplier
    A = len(g.areas)
    supply = np.zeros((A, T))
    sales = np.zeros((A, T))
    for role, out in (("area_total", supply), ("customer", sales)):
        rows, cols = np.nonzero((g.role == role)[:, None] & (area >= 0))
        np.add.at(out, (area[rows, cols], cols), e[rows, cols])
    seen_by_inventory = supply - sales
    balance = t.area_balance()
    inventory_delta = np.zeros((A, T))
    energy_delta = np.zeros((A, T))
    for r in t.fault_records():
        target = (
            inventory_delta if r["kind"] in ("wrong_multiplier", "wrong_area") else energy_delta
        )
        for sig in r["signature"]:
            if sig["level"] == "area":
                target[g.areas.index(sig["group"])] += sig["delta_loss"]
    public = ~g.area_dedicated
    np.testing.assert_allclose(
        seen_by_inventory[public], (balance["loss"] + inventory_delta)[public], atol=1e-9
    )
    members = (g.role == "customer")[None, :] & (g.meter_area[None, :] == np.arange(A)[:, None])
    totals = (g.role == "area_total")[None, :] & (g.meter_area[None, :] == np.arange(A)[:, None])
    steps = 0.01 * ((members | totals) @ g.multiplier)
    gap = np.abs(balance["loss"] - balance["technical"] - energy_delta)[public]
    assert (gap[np.isfinite(gap)] <= np.broadcast_to(steps[public, None], gap.shape)[
        np.isfinite(gap)] + 1e-9).all()  # fmt: skip
    return seen_by_inventory, balance


def test_signatures_explain_the_loss_an_inventory_based_analysis_sees():
    """Loss computed as an analysis would (inventory multipliers and areas, per interval)
    = the measured loss + the inventory faults' signatures; the measured loss = technical
    loss + the energy faults' signatures, within the registers' steps."""
    faults = (
        Fault("wrong_multiplier", "f01-a01-total", DAY1, {"ct_ratio": 200}),
        Fault("wrong_multiplier", "f01-a02-c001", DAY1 + timedelta(hours=5), {"ct_ratio": 10}),
        Fault("wrong_area", "f01-a01-c011", DAY1, {"area": "f01-a02"}),
        Fault("theft", "f01-a02-c004", None, {"share": 0.25}),
        Fault("stopped", "f01-a01-c012", DAY1),
    )
    w = build_world(small(faults=faults))
    g, t = w.grid, w.truth
    seen_by_inventory, balance = check_loss_identities(w)
    j = g.areas.index("f01-a01")
    # from DAY1 f01-a01's loss jumps by E_sec × (200 − true CT) of its total meter (wrong CT)
    jump = seen_by_inventory[j, 96:].mean() - balance["loss"][j, 96:].mean()
    i = g.index("f01-a01-total")
    assert jump == pytest.approx(
        (np.diff(t.register[i])[96:] * (200 - g.multiplier[i])).mean()
        + t.measured[g.index("f01-a01-c011"), 96:].mean()  # and the misassigned customer's
    )  # energy leaves f01-a01's sales (the inventory counts it in f01-a02)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    areas=st.integers(1, 3),
    meters=st.integers(1, 12),
    picks=st.lists(
        st.tuples(
            st.sampled_from(sorted(FAULT_KINDS)),
            st.integers(0, 10_000),  # which meter
            st.integers(0, 2 * 96),  # start boundary (0 … the end)
        ),
        max_size=4,
        unique_by=lambda p: p[1],
    ),
)
def test_any_world_conserves_energy_and_explains_its_faults(seed, areas, meters, picks):
    spec = small(seed=seed, days=2, feeders=1, areas_per_feeder=areas, meters_per_area=meters)
    names = build_world(spec).grid.meters
    params = {"theft": {"share": 0.2}, "meter_error": {"pct": -3.0},
              "clock_drift": {"seconds_per_day": 120.0}, "wrong_multiplier": {"ct_ratio": 7},
              "wrong_area": {"area": "f01-a01"}}  # fmt: skip
    faults, used = [], set()
    for kind, which, k in picks:
        meter = names[which % len(names)]
        if meter in used or (kind == "wrong_area" and "-c" not in meter):
            continue
        used.add(meter)
        faults.append(Fault(kind, meter, START + timedelta(minutes=15 * k), params.get(kind, {})))
    w = build_world(small(seed=seed, days=2, feeders=1, areas_per_feeder=areas,
                          meters_per_area=meters, faults=tuple(faults)))  # fmt: skip
    g, t = w.grid, w.truth
    totals, heads = g.role == "area_total", g.role == "feeder_head"
    expected = t.mv_loss.copy()  # per feeder: Σ its area totals + transformer losses + MV I²R
    np.add.at(expected, g.meter_feeder[totals], t.energy[totals])
    np.add.at(expected, g.area_feeder, t.trafo_loss)
    head = np.zeros_like(expected)  # a replaced head meter and its successor: both count
    np.add.at(head, g.meter_feeder[heads], t.energy[heads])
    np.testing.assert_allclose(head, expected, rtol=1e-12)
    assert np.isfinite(t.register).all() and (t.register >= 0).all()
    for r in t.fault_records():  # every fault is recorded where it was put, with a signature
        assert r["meter"] in used and r["signature"]
        assert r["start"] >= START and r["start"] <= START + timedelta(days=2)
    inv = w.inventory()
    assert sorted({r["meter"] for r in inv["metering_point"]}) == sorted(g.meters)
    check_loss_identities(w)


def test_a_replaced_meter_hands_its_point_to_the_new_one():
    w = build_world(
        small(faults=(Fault("replacement", "f01-a01-c006", DAY1 + timedelta(hours=3)),))
    )
    g, t = w.grid, w.truth
    old, new, k = g.index("f01-a01-c006"), g.index("f01-a01-c006-r"), 96 + 12
    assert g.meter_area[new] == g.meter_area[old] and g.multiplier[new] == g.multiplier[old]
    # the old register stops at the swap, the new one starts from 0 there
    assert (t.register[old, k:] == t.register[old, k]).all()
    assert (t.register[new, : k + 1] == 0.0).all()
    # together they measured the point's energy: the area balance is untouched
    both = t.measured[old] + t.measured[new]
    whole = t.energy[old] + t.energy[new]
    assert np.all(np.abs(both - whole) <= 0.01 * g.multiplier[old] + 1e-9)
    inv = w.inventory()
    [rep] = inv["replacement"]
    at = DAY1 + timedelta(hours=3)
    assert rep == {"old_meter": "f01-a01-c006", "new_meter": "f01-a01-c006-r", "at": at,
                   "quantity": "1.8.0", "old_final": t.register[old, k],
                   "new_first": 0.0}  # fmt: skip
    rows = {r["meter"]: r for r in inv["metering_point"]}
    assert rows["f01-a01-c006"]["valid_to"] == at == rows["f01-a01-c006-r"]["valid_from"]
    [conc] = [c for c in inv["concentrator"] if c["area"] == "f01-a01"]
    assert "f01-a01-c006-r" in conc["meters"]
    [record] = t.fault_records()
    assert record["params"] == {"new_meter": "f01-a01-c006-r", "old_final": t.register[old, k],
                                "new_first": 0.0}  # fmt: skip
    check_loss_identities(w)
