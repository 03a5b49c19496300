"""The world as gridread sees it: its inventory (what the utility's ledger *says*, inventory
faults included) and `WorldMeter`, a `MeterModel` look-alike the device simulators serve.

Protocols: feeder heads and the dedicated customers' meters are Modbus TCP units behind one
gateway; each public area's customers sit behind a concentrator uploading over MQTT, or — for
the areas given in `bus_ports` — on a DL/T 645 RS-485 bus. The area total meter is a Modbus
unit too (`area_totals="modbus"`), or read by its area's concentrator / bus with the
customers (`area_totals="local"`, as many concentrators do), which gives it a 15-min curve.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from simulators.world import physics
from simulators.world.faults import quantize
from simulators.world.spec import STEP

if TYPE_CHECKING:
    from simulators.world.world import World

PHASES = ("A", "B", "C", "ABC")
CLASS_NAMES = ("residential", "commercial", "industrial")


class WorldMeter:
    """One world meter with `simulators.meter_model.MeterModel`'s interface.

    Registers are the world's *shown* registers (secondary kWh, `register_decimals`), exact at the
    15-min boundaries and advancing linearly inside an interval; before the world's start and
    after its end they stand still. Power, currents and voltages are the interval's (secondary
    units: what the meter's display shows behind its CT/PT)."""

    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.index = index
        g, t = world.grid, world.truth
        self.name = g.meters[index]
        self.three_phase = bool(g.phase[index] == 3)
        self.power_factor = float(t.power_factor[index])
        self.multiplier = float(g.multiplier[index])
        self.export_kwh = float(t.export[index, -1])  # DL/T 645 bus: a constant export register
        self.register_decimals = int(world.truth.decimals[index])

    def _at(self, t: float) -> tuple[int, float]:
        b = self.world.truth.boundaries
        k = int(np.clip((t - b[0]) // STEP, 0, len(b) - 2))
        return k, float(np.clip((t - b[k]) / STEP, 0.0, 1.0))

    def _register(self, reg: np.ndarray, t: float) -> float:
        k, frac = self._at(t)
        modulus = self.world.truth.modulus[self.index]
        d = reg[k + 1] - reg[k]
        if d < 0:  # a wrap advances by d + modulus; a reset shows at its boundary only
            d = d + modulus if np.isfinite(modulus) else 0.0
        value = reg[k] + frac * d
        value = np.mod(value, modulus) if np.isfinite(modulus) else value
        return float(quantize(value, self.register_decimals))

    def energy_kwh(self, t: float) -> float:
        return self._register(self.world.truth.register[self.index], t)

    def export_at(self, t: float) -> float:
        return self._register(self.world.truth.export[self.index], t)

    def power_kw(self, t: float) -> float:
        k, _ = self._at(t)
        return float(self.world.truth.seen[self.index, k] * 4.0 / self.multiplier)

    def voltages(self, t: float) -> tuple[float, float, float]:
        k, _ = self._at(t)
        g = self.world.grid
        v = float(self.world.truth.voltage[self.index, k])
        if g.role[self.index] == "feeder_head":
            return (v, v, v)
        # the phases of a three-phase point differ by a fixed small unbalance
        return (v, round(v - 0.4, 1), round(v + 0.3, 1)) if self.three_phase else (v, v, v)

    def values(self, t: float) -> dict[str, float]:
        p = self.power_kw(t)
        va, vb, vc = self.voltages(t)
        pf = self.power_factor
        share = p * 1000.0 / 3.0 if self.three_phase else p * 1000.0
        return {
            "32.7.0": va,
            "52.7.0": vb,
            "72.7.0": vc,
            "31.7.0": share / (va * pf),
            "51.7.0": share / (vb * pf) if self.three_phase else 0.0,
            "71.7.0": share / (vc * pf) if self.three_phase else 0.0,
            "1.7.0": p,
            "13.7.0": pf,
            "14.7.0": 50.0,
            "1.8.0": self.energy_kwh(t),
            "2.8.0": self.export_at(t),
        }

    def curve_values(self, t: float) -> dict[str, float]:
        """Extra 15-min curve quantities a concentrator uploads with the energy: the voltage
        (a single-phase meter's only voltage is uploaded as 32.7.0, whatever its phase)."""
        va, vb, vc = self.voltages(t)
        return {"32.7.0": va, "52.7.0": vb, "72.7.0": vc} if self.three_phase else {"32.7.0": va}


def modbus_units(world: World, area_totals: str = "modbus") -> dict[int, str]:
    """Unit id → meter for the Modbus gateway: feeder heads, dedicated customers' meters and
    (area_totals="modbus") the public areas' total meters, in order."""
    g = world.grid
    public_total = (g.role == "area_total") & ~g.area_dedicated[np.maximum(g.meter_area, 0)]
    on_modbus = (g.role != "customer") & ~(public_total & (area_totals != "modbus"))
    names = [g.meters[i] for i in np.flatnonzero(on_modbus)]
    if len(names) > 247:
        raise ValueError(f"{len(names)} Modbus meters do not fit behind one gateway (max 247)")
    return {u: m for u, m in enumerate(names, 1)}


def _nominal(world: World, meter: str) -> dict[str, float]:
    """A feeder head's phase voltage behind its PT (10 kV/√3/100 ≈ 57.7 V): without it the
    plausibility screen judges its voltages against the site's 220 V and stores them SUSPECT."""
    g = world.grid
    i = g.index(meter)
    if g.role[i] != "feeder_head":
        return {}
    return {"nominal_voltage": round(physics.MV_KV * 1000.0 / np.sqrt(3.0) / g.pt[i], 1)}


def bus_address(world: World, meter: str) -> str:
    return f"{world.grid.index(meter) + 1:012d}"


def inventory(
    world: World,
    *,
    modbus_host: str = "127.0.0.1",
    modbus_port: int = 5020,
    register_map: str = "three_phase_meter",
    poll_interval: float = 60.0,
    bus_ports: dict[str, str] | None = None,
    area_totals: str = "modbus",
) -> dict[str, Any]:
    """The config-file tables (contract §2 plus [[device]], [[bus]], [[concentrator]])."""
    if area_totals not in ("modbus", "local"):
        raise ValueError(f"area_totals {area_totals!r}: expected 'modbus' or 'local'")
    g = world.grid
    bus_ports = bus_ports or {}
    unknown = set(bus_ports) - set(g.areas)
    if unknown:
        raise ValueError(f"bus_ports: no such area {sorted(unknown)}")
    _check_readout(world, bus_ports, area_totals)
    out: dict[str, Any] = {
        "substation": [{"name": "sub-01", "voltage_kv": 35}],
        "feeder": [{"name": f, "substation": "sub-01", "voltage_kv": 10} for f in g.feeders],
        "area": [
            {
                "name": a,
                "feeder": g.feeders[g.area_feeder[j]],
                "kind": "dedicated" if g.area_dedicated[j] else "public",
                "transformer_kva": int(g.area_kva[j]),
            }
            for j, a in enumerate(g.areas)
        ],
        "metering_point": [row for i in range(len(g.meters)) for row in _points(world, i)],
        "meter_asset": _assets(world),
        "device": [
            {
                "name": m,
                "protocol": "modbus_tcp",
                "host": modbus_host,
                "port": modbus_port,
                "unit_id": u,
                "register_map": register_map,
                "poll_interval": poll_interval,
            }
            | _nominal(world, m)
            for u, m in modbus_units(world, area_totals).items()
        ],
        "replacement": [
            {
                "old_meter": g.meters[f.meter],
                "new_meter": f.params["new_meter"],
                "at": datetime.fromtimestamp(int(world.truth.boundaries[f.k]), UTC),
                "quantity": "1.8.0",
                "old_final": float(world.truth.register[f.meter, f.k]),
                "new_first": float(world.truth.register[g.index(f.params["new_meter"]), f.k]),
            }
            for f in world.truth.faults
            if f.kind == "replacement"
        ],
        "concentrator": [],
        "bus": [],
    }
    for j, area in enumerate(g.areas):
        members = [
            g.meters[i] for i in np.flatnonzero((g.meter_area == j) & (g.role == "customer"))
        ]
        if not members:
            continue
        if area_totals == "local":
            members.insert(0, f"{area}-total")
        if area in bus_ports:
            out["bus"].append(
                {
                    "name": f"{area}-485",
                    "port": bus_ports[area],
                    "baud": 9600,
                    "meter": [{"name": m, "address": bus_address(world, m)} for m in members],
                }
            )
        else:
            out["concentrator"].append({"name": f"{area}-jzq", "area": area, "meters": members})
    return out


def _check_readout(world: World, bus_ports: dict[str, str], area_totals: str) -> None:
    """Registers the world keeps with more digits than the protocol serving them carries
    (Modbus map, DL/T 645: two) would not be the registers stored: refused in one line."""
    spec = world.spec
    if spec.precise_decimals is None or spec.precise_decimals == spec.register_decimals:
        return
    off_bus = set(bus_ports) - set(spec.bus_areas)
    if off_bus:
        raise ValueError(
            f"bus_ports {sorted(off_bus)}: these areas keep {spec.precise_decimals}-decimal"
            " registers (WorldSpec.precise_decimals); name them in WorldSpec.bus_areas"
        )
    if area_totals != "local":
        raise ValueError(
            "area_totals='modbus': the area totals keep"
            f" {spec.precise_decimals}-decimal registers; read them locally (area_totals='local')"
        )


def _points(world: World, i: int) -> list[dict[str, Any]]:
    """The meter's metering point; an inventory fault splits it at its start into the true
    row before and the wrong one after."""
    g = world.grid
    row: dict[str, Any] = {
        "meter": g.meters[i],
        "role": str(g.role[i]),
        "phase": PHASES[g.phase[i]],
    }
    if g.role[i] == "feeder_head":
        row["feeder"] = g.feeders[g.meter_feeder[i]]
    else:
        row["area"] = g.areas[g.meter_area[i]]
    row["ct_ratio"] = int(g.ct[i])
    row["pt_ratio"] = int(g.pt[i])
    if g.cls[i] >= 0:
        row["customer_class"] = CLASS_NAMES[g.cls[i]]
    rows = [row]
    for f in world.truth.faults:
        at = datetime.fromtimestamp(int(world.truth.boundaries[f.k]), UTC)
        if f.kind == "replacement" and f.params["new_meter"] == g.meters[i]:
            rows[-1]["valid_from"] = at  # the new meter's point from its fitting
        elif f.kind == "replacement" and f.meter == i:
            rows[-1]["valid_to"] = at  # the old one's until its removal
        if f.meter != i or f.kind not in ("wrong_multiplier", "wrong_area"):
            continue
        wrong = dict(rows[-1])
        if f.kind == "wrong_multiplier":
            wrong["ct_ratio"] = f.params["ct_ratio"]
        else:
            wrong["area"] = f.params["area"]
        if f.k == 0 and len(rows) == 1:
            rows = [wrong]
        else:
            rows[-1]["valid_to"] = at
            wrong["valid_from"] = at
            rows.append(wrong)
    return rows


def _assets(world: World) -> list[dict[str, Any]]:
    """Model and classes by role; installed 0–9 years before the world's start, verified a
    fortnight before, next verification 8 years after (the rotation of smart meters): some
    are due within the world's span."""
    g = world.grid
    n = len(g.meters)
    rng = np.random.default_rng(world.spec.seed + 1)  # its own stream: the world is unchanged
    start = world.spec.start.date()
    installed = [start - timedelta(days=int(d)) for d in rng.integers(30, 9 * 365, n)]
    rows = []
    for i in range(n):
        verified = installed[i] - timedelta(days=14)
        due = verified.replace(year=verified.year + 8) if (verified.month, verified.day) != (
            2, 29) else verified + timedelta(days=8 * 365)  # fmt: skip
        rows.append(
            {
                **_asset(world, i),
                "installed": installed[i],
                "last_verified": verified,
                "next_verification": due,
                "rotation_plan": str(due.year),
            }
        )
    return rows


def _asset(world: World, i: int) -> dict[str, Any]:
    g = world.grid
    role = g.role[i]
    if role == "feeder_head":
        asset = {"model": "DTZ341", "accuracy_class": "0.5S", "ct_class": "0.2S", "pt_class": "0.2"}
    elif role == "area_total":
        asset = {"model": "DTZY719", "accuracy_class": "0.5S", "ct_class": "0.5S"}
    elif g.phase[i] == 3:
        asset = {"model": "DTZY71", "accuracy_class": "1"}
        if g.ct[i] > 1:
            asset["ct_class"] = "0.5S"
    else:
        asset = {"model": "DDZY71", "accuracy_class": "2"}
    return {"meter": g.meters[i], **asset}
