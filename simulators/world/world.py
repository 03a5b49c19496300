"""`build_world(spec) -> World`: the grid, its loads, its physics and its meters' registers.

Energy flows, per 15-min interval (interval-mean power × 0.25 h):
  public area supply (its total meter) = Σ customers' consumption + Σ service-line I²R
                                         + fixed loss (the meters' own consumption);
  dedicated area (专变) supply         = the customer's load (metered on the LV side);
  feeder head                          = Σ area supplies + Σ transformer losses + MV line I²R.
Voltages: the feeder's MV voltage (shared), minus each transformer's drop with its load, minus
each customer's own line drop, so the meters of one area have correlated voltages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from simulators.world import physics
from simulators.world.faults import Resolved, registers, seen_energy
from simulators.world.loads import CLASSES, customer_loads
from simulators.world.spec import INVENTORY_FAULTS, STEP, WorldSpec
from simulators.world.truth import Truth

OWN_USE_KW = {True: 0.0010, False: 0.0020}  # a single- / three-phase meter's own consumption
CONCENTRATOR_KW = 0.005
PHASES = ("A", "B", "C", "ABC")


@dataclass
class Grid:
    """The static grid: names and parameters, one entry per feeder, area and meter."""

    feeders: list[str]
    feeder_r_ohm: np.ndarray  # (F,) per conductor
    areas: list[str]
    area_feeder: np.ndarray  # (A,)
    area_dedicated: np.ndarray  # (A,) bool
    area_kva: np.ndarray
    area_p0: np.ndarray
    area_pk: np.ndarray
    meters: list[str]
    role: np.ndarray  # (n,) str: feeder_head | area_total | customer
    meter_feeder: np.ndarray  # (n,)
    meter_area: np.ndarray  # (n,) −1 for feeder heads
    phase: np.ndarray  # (n,) index into PHASES
    cls: np.ndarray  # (n,) index into CLASSES, −1 for heads and public area totals
    ct: np.ndarray  # (n,) int
    pt: np.ndarray  # (n,) int
    r_ohm: np.ndarray  # (n,) service line per conductor (customers)
    x_ohm: np.ndarray
    tan_phi: np.ndarray  # (n,)

    @property
    def multiplier(self) -> np.ndarray:
        return (self.ct * self.pt).astype(float)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except AttributeError:
            self._index = {m: i for i, m in enumerate(self.meters)}
            return self.index(name)
        except KeyError:
            raise KeyError(f"no meter {name!r} in this world") from None


@dataclass
class World:
    spec: WorldSpec
    grid: Grid
    truth: Truth

    def inventory(self, **where: Any) -> dict[str, Any]:
        from simulators.world.adapters import inventory

        return inventory(self, **where)

    def meter_model(self, name: str):
        from simulators.world.adapters import WorldMeter

        return WorldMeter(self, self.grid.index(name))


def _layout(spec: WorldSpec, rng: np.random.Generator) -> dict[str, list]:
    """Names, roles and customer attributes, built per feeder and area."""
    rows: dict[str, list] = {k: [] for k in ("meter", "role", "feeder", "area", "phase", "cls")}
    areas: list[tuple[str, int, bool]] = []
    classes = np.array([spec.classes.get(c, 0.0) for c in CLASSES])
    classes = classes / classes.sum()

    def add(name, role, f, a, phase, cls):
        for k, v in zip(rows, (name, role, f, a, phase, cls), strict=True):
            rows[k].append(v)

    for f in range(spec.feeders):
        feeder = f"f{f + 1:02d}"
        add(f"{feeder}-head", "feeder_head", f, -1, 3, -1)
        for j in range(spec.areas_per_feeder):
            a = len(areas)
            area = f"{feeder}-a{j + 1:02d}"
            areas.append((area, f, False))
            add(f"{area}-total", "area_total", f, a, 3, -1)
            cls = rng.choice(len(CLASSES), spec.meters_per_area, p=classes)
            single = (cls == 0) & (rng.random(spec.meters_per_area) < spec.share_single_phase)
            phase = np.where(single, rng.integers(0, 3, spec.meters_per_area), 3)
            for k in range(spec.meters_per_area):
                add(f"{area}-c{k + 1:03d}", "customer", f, a, int(phase[k]), int(cls[k]))
        for j in range(spec.dedicated_per_feeder):
            a = len(areas)
            area = f"{feeder}-d{j + 1:02d}"
            areas.append((area, f, True))
            add(f"{area}-total", "area_total", f, a, 3, CLASSES.index("industrial"))
    return {**rows, "areas": areas}


def build_world(spec: WorldSpec) -> World:
    rng = np.random.default_rng(spec.seed)
    lay = _layout(spec, rng)
    n, T = len(lay["meter"]), spec.intervals
    role = np.array(lay["role"])
    meter_area = np.array(lay["area"])
    meter_feeder = np.array(lay["feeder"])
    phase = np.array(lay["phase"])
    cls = np.array(lay["cls"])
    area_names = [a for a, _, _ in lay["areas"]]
    area_feeder = np.array([f for _, f, _ in lay["areas"]])
    dedicated = np.array([d for _, _, d in lay["areas"]])
    A, F = len(area_names), spec.feeders

    # loads: customers and the dedicated customers, each its own curve
    loaded = (role == "customer") | ((role == "area_total") & (cls >= 0))
    p = np.zeros((n, T))
    p[loaded] = customer_loads(rng, cls[loaded], spec.t0, T, spec.utc_offset_hours, STEP)
    p[loaded & (role == "area_total")] *= 4.0  # a dedicated transformer's customer is large
    tan_phi = np.tan(np.arccos(rng.uniform(0.88, 0.99, n)))
    q = p * tan_phi[:, None]
    customer = role == "customer"
    single = phase < 3

    # service lines: single-phase 10 mm² Cu (1.83 Ω/km), three-phase 70 mm² Al (0.44 Ω/km)
    length_km = rng.uniform(*spec.service_length_km, n)
    r_ohm = np.where(customer, length_km * np.where(single, 1.83, 0.44), 0.0)
    x_ohm = np.where(customer, length_km * 0.08, 0.0)
    # a customer's cable is sized to its peak: at most a 5 % drop (larger loads, thicker cable)
    r_eq, _ = physics.equivalent_line(r_ohm, x_ohm, single)
    limit = 0.05 * 3.0 * physics.LV_NOMINAL**2 / (np.maximum(p.max(axis=1), 1e-3) * 1000.0)
    sized = np.minimum(1.0, limit / np.maximum(r_eq, 1e-12))
    r_ohm, x_ohm = r_ohm * sized, x_ohm * sized
    r_eq, x_eq = physics.equivalent_line(r_ohm, x_ohm, single)

    # transformers sized to their area's peak; CTs on area totals and large customers
    area_of_c = meter_area[customer]
    # sized to the area's coincident peak (appliance spikes do not all come at once)
    area_load = np.zeros((A, T))
    np.add.at(area_load, meter_area[loaded], p[loaded])
    kva = np.array([physics.transformer_for(pk) for pk in area_load.max(axis=1)])
    p0, pk = np.array([physics.TRANSFORMERS[k] for k in kva]).T
    rated_a = kva * 1000.0 / (np.sqrt(3.0) * 400.0)
    ct = np.ones(n, dtype=int)
    pt = np.ones(n, dtype=int)
    totals = role == "area_total"
    ct[totals] = [physics.ct_for(a) for a in rated_a[meter_area[totals]]]
    big = customer & (p.max(axis=1) * 1000.0 / (3 * 230.0) > 60.0)  # > 60 A: behind a CT
    ct[big] = [physics.ct_for(a) for a in p[big].max(axis=1) * 1000.0 / (3 * 230.0)]
    heads = role == "feeder_head"
    pt[heads] = 100  # 10 kV / 100 V
    feeder_load = np.zeros((F, T))
    np.add.at(feeder_load, meter_feeder[loaded], p[loaded])
    feeder_peak = feeder_load.max(axis=1)
    ct[heads] = [physics.ct_for(pk / (np.sqrt(3.0) * physics.MV_KV)) for pk in feeder_peak]

    # the feeders' MV voltage: falls with the feeder's load (up to 2.5 % at its peak), plus
    # a slow random walk of the substation's bus; shared by all the feeder's areas
    load = np.zeros((F, T))
    np.add.at(load, meter_feeder[loaded], p[loaded])
    walk = np.cumsum(rng.normal(0.0, 0.0015, (F, T)), axis=1)
    walk = 0.01 * np.tanh((walk - walk.mean(axis=1, keepdims=True)) / 0.01)
    v_mv = (
        1.03
        + rng.uniform(-0.01, 0.01, (F, 1))
        - 0.025 * load / load.max(axis=1, keepdims=True)
        + walk
    )

    # LV networks: two passes (the transformer drop depends on the line losses and back)
    fixed = np.zeros(A)
    own_use = np.where(single, OWN_USE_KW[True], OWN_USE_KW[False])
    np.add.at(fixed, meter_area[customer], own_use[customer])
    fixed[~dedicated] += OWN_USE_KW[False] + CONCENTRATOR_KW
    v_hv = v_mv[area_feeder]
    v_lv = v_hv.copy()
    pa_c = np.zeros((A, T))
    qa = np.zeros((A, T))
    np.add.at(pa_c, meter_area[loaded], p[loaded])
    np.add.at(qa, meter_area[loaded], q[loaded])
    for _ in range(2):
        v_bus = v_lv[area_of_c] * physics.LV_NOMINAL
        v_c, loss_c = physics.service_line(p[customer], q[customer], r_eq[customer],
                                           x_eq[customer], v_bus)  # fmt: skip
        lv_loss = np.zeros((A, T))
        np.add.at(lv_loss, area_of_c, loss_c)
        supply = pa_c + lv_loss + fixed[:, None]
        v_lv, trafo_loss = physics.transformer(supply, qa, kva, p0, pk, v_hv)
    feeder_p = np.zeros((F, T))
    feeder_q = np.zeros((F, T))
    np.add.at(feeder_p, area_feeder, supply + trafo_loss)
    np.add.at(feeder_q, area_feeder, qa)
    feeder_r = rng.uniform(1.0, 2.5, F)  # 4–9 km of 150 mm² overhead line
    mv_loss = physics.mv_line_loss(feeder_p, feeder_q, feeder_r, v_mv)
    head_p = feeder_p + mv_loss

    # true energy through each metering point, primary kWh; voltages at each meter
    energy = np.zeros((n, T))
    energy[customer] = p[customer] * 0.25
    energy[totals] = supply[meter_area[totals]] * 0.25
    energy[heads] = head_p * 0.25
    volts = np.empty((n, T))
    volts[customer] = v_c
    volts[totals] = v_lv[meter_area[totals]] * physics.LV_NOMINAL
    volts[heads] = v_mv * physics.MV_KV * 1000.0 / np.sqrt(3.0) / pt[heads][:, None]
    if not np.isfinite(volts).all():  # a load beyond what its line or transformer can carry
        raise ValueError(f"world seed {spec.seed}: the power flow has no solution")
    flow = volts.copy()  # the power flow's voltages, before noise and the display's 0.1 V
    # per area a small background (other loads on the LV network), per meter its own noise
    area_noise = rng.normal(0.0, 0.4, (A, T))
    volts[~heads] += area_noise[meter_area[~heads]]
    volts = np.round(volts + rng.normal(0.0, 0.05, (n, T)), 1)

    grid = Grid(
        feeders=[f"f{f + 1:02d}" for f in range(F)],
        feeder_r_ohm=feeder_r,
        areas=area_names,
        area_feeder=area_feeder,
        area_dedicated=dedicated,
        area_kva=kva,
        area_p0=p0,
        area_pk=pk,
        meters=lay["meter"],
        role=role,
        meter_feeder=meter_feeder,
        meter_area=meter_area,
        phase=phase,
        cls=cls,
        ct=ct,
        pt=pt,
        r_ohm=r_ohm,
        x_ohm=x_ohm,
        tan_phi=tan_phi,
    )
    for f in spec.faults:  # a replaced meter: a new device takes over its point (换表)
        if f.kind == "replacement":
            grid, energy, volts, flow = _replace(grid, energy, volts, flow, f, spec)
    n = len(grid.meters)
    boundaries = spec.t0 + np.arange(T + 1, dtype=np.int64) * STEP
    faults = [_resolve(f, grid, spec) for f in spec.faults]
    seen_imp, seen_exp = seen_energy(energy, faults)
    r0 = np.round(rng.uniform(100.0, 20_000.0, n), 2)
    r0[[grid.index(f.params["new_meter"]) for f in faults if f.kind == "replacement"]] = 0.0
    d = _decimals(grid, spec)
    true_reg, shown, modulus = registers(seen_imp, grid.multiplier, r0, boundaries, faults, d)
    _, export, _ = registers(seen_exp, grid.multiplier, np.zeros(n), boundaries, [], d)
    truth = Truth(
        grid=grid,
        boundaries=boundaries,
        energy=energy,
        seen=seen_imp + seen_exp,
        register_true=true_reg,
        register=shown,
        export=export,
        modulus=modulus,
        voltage=volts,
        voltage_flow=flow,
        mv_voltage=v_mv,
        power_factor=1.0 / np.sqrt(1.0 + grid.tan_phi**2),
        lv_loss=lv_loss * 0.25,
        fixed_loss=np.broadcast_to(fixed[:, None] * 0.25, (A, T)).copy(),
        trafo_loss=trafo_loss * 0.25,
        mv_loss=mv_loss * 0.25,
        faults=faults,
        decimals=d,
    )
    return World(spec, grid, truth)


def _decimals(grid: Grid, spec: WorldSpec) -> np.ndarray:
    """Each meter's register digits: `precise_decimals` for what a concentrator reads by
    DL/T 698.45 (public areas' customers and totals, not on a bus), else `register_decimals`
    (Modbus, DL/T 645: XXXXXX.XX)."""
    out = np.full(len(grid.meters), spec.register_decimals)
    if spec.precise_decimals is None:
        return out
    unknown = set(spec.bus_areas) - set(grid.areas)
    if unknown:
        raise ValueError(f"WorldSpec.bus_areas: no such area {sorted(unknown)}")
    area = np.maximum(grid.meter_area, 0)
    on_bus = np.isin(np.asarray(grid.areas)[area], spec.bus_areas)
    local = (grid.meter_area >= 0) & ~grid.area_dedicated[area] & ~on_bus
    out[local] = spec.precise_decimals
    return out


PER_METER = ("role", "meter_feeder", "meter_area", "phase", "cls", "ct", "pt", "r_ohm", "x_ohm",
             "tan_phi")  # fmt: skip


def _boundary(fault, spec: WorldSpec) -> int:
    start = spec.t0 if fault.start is None else fault.start.timestamp()
    return int(np.clip(np.ceil((start - spec.t0) / STEP), 0, spec.intervals))


def _replace(grid: Grid, energy, volts, flow, fault, spec: WorldSpec) -> tuple:
    """Meter `fault.meter` is replaced at the fault's start by `<meter>-r` on the same point
    (same role, place, phase, CT/PT): the old one measures before, the new one from then on
    (its register starts at 0)."""
    i, k = grid.index(fault.meter), _boundary(fault, spec)
    new = f"{fault.meter}-r"
    if new in grid.meters:
        raise ValueError(f"fault replacement on {fault.meter}: {new} exists already")
    if any(f.meter == fault.meter and f.kind in INVENTORY_FAULTS for f in spec.faults):
        raise ValueError(f"fault replacement on {fault.meter}: not with an inventory fault")
    fields = {f: np.append(getattr(grid, f), getattr(grid, f)[i]) for f in PER_METER}
    grid = replace(grid, meters=[*grid.meters, new], **fields)
    energy = np.vstack([energy, energy[i]])
    energy[-1, :k] = 0.0
    energy[i, k:] = 0.0
    return grid, energy, np.vstack([volts, volts[i]]), np.vstack([flow, flow[i]])


def _resolve(fault, grid: Grid, spec: WorldSpec) -> Resolved:
    i = grid.index(fault.meter)
    k = _boundary(fault, spec)
    if fault.kind == "replacement":
        return Resolved(fault.kind, i, k, {**fault.params, "new_meter": f"{fault.meter}-r"})
    if fault.kind == "wrong_area" and fault.params["area"] not in grid.areas:
        raise ValueError(f"fault wrong_area on {fault.meter}: no area {fault.params['area']!r}")
    if fault.kind == "wrong_multiplier" and fault.params["ct_ratio"] <= 0:
        raise ValueError(f"fault wrong_multiplier on {fault.meter}: ct_ratio must be > 0")
    return Resolved(fault.kind, i, k, dict(fault.params))
