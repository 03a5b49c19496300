"""The world's fast formulas against pandapower's AC power flow (Newton-Raphson) on a few
areas at a few instants: the transformer (P0, Pk, vk), each customer's service line, the
voltages. Single-phase customers enter pandapower as their balanced equivalent (a load of the
same power on a line of 6·r per conductor, see simulators/world/physics.py)."""

import numpy as np
import pandapower as pp
import pytest

from simulators.world import WorldSpec, build_world
from simulators.world.physics import LV_NOMINAL, VK_PERCENT, equivalent_line

LOSS_RTOL = 0.01  # line and transformer losses within 1 % (measured: ≤ 0.7 %)
VOLTAGE_RTOL = 0.001  # voltages within 0.1 % (measured: ≤ 0.06 %)


def area_flow(world, area: int, t: int):
    """pandapower's result for one area at interval t: (line loss kW, transformer loss kW,
    {meter index: voltage V}, LV bus voltage V)."""
    g, truth = world.grid, world.truth
    members = np.flatnonzero((g.meter_area == area) & (g.role == "customer"))
    r_eq, x_eq = equivalent_line(g.r_ohm, g.x_ohm, g.phase < 3)
    net = pp.create_empty_network()
    hv = pp.create_bus(net, vn_kv=10.0)
    lv = pp.create_bus(net, vn_kv=0.4)
    pp.create_ext_grid(net, hv, vm_pu=truth.mv_voltage[g.area_feeder[area], t])
    kva = g.area_kva[area]
    pp.create_transformer_from_parameters(
        net, hv, lv, sn_mva=kva / 1000.0, vn_hv_kv=10.0, vn_lv_kv=0.4,
        vkr_percent=g.area_pk[area] / kva * 100.0, vk_percent=VK_PERCENT,
        pfe_kw=g.area_p0[area], i0_percent=0.0,
    )  # fmt: skip
    buses = {}
    for i in members:
        b = pp.create_bus(net, vn_kv=0.4)
        buses[i] = b
        pp.create_line_from_parameters(
            net, lv, b, length_km=1.0, r_ohm_per_km=r_eq[i], x_ohm_per_km=x_eq[i],
            c_nf_per_km=0.0, max_i_ka=1.0,
        )  # fmt: skip
        p_kw = truth.energy[i, t] * 4.0
        pp.create_load(net, b, p_mw=p_kw / 1000.0, q_mvar=p_kw * g.tan_phi[i] / 1000.0)
    pp.create_load(net, lv, p_mw=truth.fixed_loss[area, t] * 4.0 / 1000.0)
    pp.runpp(net, algorithm="nr", tolerance_mva=1e-10, numba=False)
    volts = {i: net.res_bus.vm_pu[b] * LV_NOMINAL for i, b in buses.items()}
    return (
        net.res_line.pl_mw.sum() * 1000.0,
        net.res_trafo.pl_mw.iloc[0] * 1000.0,
        volts,
        net.res_bus.vm_pu[lv] * LV_NOMINAL,
    )


@pytest.mark.parametrize("seed", [11, 12])
def test_fast_model_agrees_with_pandapower(seed):
    world = build_world(
        WorldSpec(seed=seed, days=2, feeders=1, areas_per_feeder=3, meters_per_area=60)
    )
    g, truth = world.grid, world.truth
    checked = 0
    for area in np.flatnonzero(~g.area_dedicated):
        total = np.flatnonzero((g.meter_area == area) & (g.role == "area_total"))[0]
        load = truth.energy[total]
        for t in (int(load.argmax()), int(load.argmin()), int(np.argsort(load)[len(load) // 2])):
            line_kw, trafo_kw, volts, v_bus = area_flow(world, area, t)
            assert truth.lv_loss[area, t] * 4.0 == pytest.approx(line_kw, rel=LOSS_RTOL)
            assert truth.trafo_loss[area, t] * 4.0 == pytest.approx(trafo_kw, rel=LOSS_RTOL)
            assert truth.voltage_flow[total, t] == pytest.approx(v_bus, rel=VOLTAGE_RTOL)
            members = list(volts)
            ours = truth.voltage_flow[members, t]
            np.testing.assert_allclose(ours, [volts[i] for i in members], rtol=VOLTAGE_RTOL)
            checked += 1
    assert checked == 9
