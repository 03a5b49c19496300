"""The world through the real pipeline: its concentrator publishes to a real Mosquitto, the
real MQTT ingest worker stores it in PostgreSQL; its area and feeder meters are polled over
Modbus TCP; an area's customers on a DL/T 645 bus. What is stored equals the world's
measured registers and voltages."""

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from collectors.dlt645.collector import BusPolicy, Dlt645BusCollector, MeterRef
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import SerialTransport
from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.registermap import load_register_map
from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.broker import INGEST
from gridread.inventory import parse_inventory, store_inventory
from ingest.store import PgCollectorStore
from ingest.writer import ReadingWriter
from simulators.concentrator import SimConcentrator
from simulators.dlt645_bus import DLT645BusSimulator, SimMeter
from simulators.modbus_meter import ManualClock, ModbusMeterSimulator
from simulators.world import Fault, WorldSpec, build_world
from simulators.world.adapters import modbus_units
from simulators.world.serve import ServedWorld

START = datetime(2026, 11, 25, 16, tzinfo=UTC)  # local midnight of 26 November
AT_NOON = datetime(2026, 11, 26, 4, tzinfo=UTC)


def world(decimals: int = 2):
    faults = (
        Fault("meter_error", "f01-a01-c002", AT_NOON, {"pct": -4.0}),
        Fault("rollover", "f01-a01-c003", AT_NOON),
        Fault("reset", "f01-a01-c004", AT_NOON),
        Fault("theft", "f01-a01-c005", AT_NOON, {"share": 0.4}),
    )
    spec = WorldSpec(seed=21, start=START, days=1, feeders=1, areas_per_feeder=1,
                     meters_per_area=12, faults=faults, register_decimals=decimals)  # fmt: skip
    return build_world(spec)


def store(url, inv) -> dict[str, int]:
    parsed = parse_inventory(inv, source="world", base_dir=Path("."))
    with psycopg.connect(url) as conn:
        return store_inventory(conn, parsed, actor="test")


def stored(url, quantity) -> dict[tuple[str, int], float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.name, extract(epoch FROM r.ts)::bigint, r.value FROM readings r"
            " JOIN devices d ON d.id = r.device_id WHERE r.quantity = %s",
            (quantity,),
        ).fetchall()
    return {(name, ts): value for name, ts, value in rows}


@pytest.mark.parametrize("decimals", [2, 4])  # 4: meters keeping 0.0001 kWh registers
async def test_concentrator_of_the_world_through_mosquitto_into_postgres(
    migrated_url, mqtt_broker, collector_store, decimals
):
    w = world(decimals)
    inv = w.inventory()
    store(migrated_url, inv)
    [conc] = inv["concentrator"]
    sim = SimConcentrator(
        conc["name"],
        {m: w.meter_model(m) for m in conc["meters"]},
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        **mqtt_broker.login(conc["name"], conc["meters"]),
    )
    expected = sum(len(sim.day_payload(m, START)["readings"]) for m in conc["meters"])
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    group = f"g{uuid.uuid4().hex[:8]}"
    worker = MqttIngestWorker(
        MqttSettings(
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            group=group,
            client_id=f"w-{group}",
            auth=mqtt_broker.auth(INGEST),
        ),
        writer,
        collector_store,
    )
    worker_task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 15)
        await asyncio.to_thread(sim.start)
        await asyncio.to_thread(sim.upload_day, START)
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            with psycopg.connect(migrated_url) as conn:
                [(n,)] = conn.execute("SELECT count(*) FROM readings").fetchall()
            if n >= expected:
                break
            await asyncio.sleep(0.1)
        await writer.flush()
    finally:
        await asyncio.to_thread(sim.stop)
        await worker.drain()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await writer.close()
        await writer_task

    t, g = w.truth, w.grid
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    energy, volts = stored(migrated_url, "1.8.0"), stored(migrated_url, "32.7.0")
    frozen = stored(migrated_url, "1.8.0*d")
    b = t.boundaries
    for m in conc["meters"]:
        i = g.index(m)
        got = np.array([energy[(m, int(ts))] for ts in b[:96]])
        np.testing.assert_array_equal(got, t.register[i, :96])  # every 15-min register
        assert frozen[(m, int(b[96]))] == t.register[i, 96]  # the day's frozen register
        got_v = np.array([volts[(m, int(ts))] for ts in b[:96]])
        np.testing.assert_array_equal(got_v, t.voltage[i, :96])
    assert len(energy) == 96 * len(conc["meters"])
    # the faults are in what was stored: the reset meter's register is 0 at noon, the
    # rollover meter wrapped there
    k = int((AT_NOON.timestamp() - b[0]) // 900)
    assert energy[("f01-a01-c004", int(b[k]))] == 0.0
    assert energy[("f01-a01-c003", int(b[k - 1]))] > 999_999
    assert energy[("f01-a01-c003", int(b[k]))] < 1


async def test_world_meters_polled_over_modbus(migrated_url):
    w = world()
    regmap = load_register_map("three_phase_meter")
    units = modbus_units(w)
    k = 50
    clock = ManualClock(float(w.truth.boundaries[k]))
    sim = ModbusMeterSimulator(regmap, {u: w.meter_model(m) for u, m in units.items()}, clock=clock)
    await sim.start()
    ids = store(migrated_url, w.inventory(modbus_port=sim.port))
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    task = asyncio.create_task(writer.run())
    scheduler = PollScheduler(writer, PollPolicy(timeout=3.0, retries=0))
    try:
        for unit, name in units.items():
            collector = ModbusTcpCollector(
                device_id=ids[name],
                device_name=name,
                host="127.0.0.1",
                port=sim.port,
                unit_id=unit,
                register_map=regmap,
                timeout=2.0,
            )
            try:
                assert await scheduler.poll(collector)
            finally:
                await collector.close()
        await writer.flush()
    finally:
        await sim.stop()
        await writer.close()
        await task
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT d.name, r.quantity, r.value FROM readings r JOIN devices d"
            " ON d.id = r.device_id WHERE r.quantity IN ('1.8.0', '32.7.0')"
        ).fetchall()
    got = {(name, q): v for name, q, v in rows}
    assert (
        {n for n, _ in got} == set(units.values()) == {"f01-head", "f01-a01-total", "f01-d01-total"}
    )
    for name in units.values():
        i = w.grid.index(name)
        assert got[(name, "1.8.0")] == w.truth.register[i, k]  # secondary kWh, as shown
        assert got[(name, "32.7.0")] == w.truth.voltage[i, k]


async def test_world_area_on_a_dlt645_bus(migrated_url):
    """An area whose customers sit on a DL/T 645 bus (a real pty): the daily read stores
    the world's 15-min registers of yesterday and its frozen register."""
    w = build_world(
        WorldSpec(seed=22, start=datetime(2026, 11, 24, 16, tzinfo=UTC), days=2,
                  feeders=1, areas_per_feeder=1, meters_per_area=4,
                  faults=(Fault("meter_error", "f01-a01-c001", None, {"pct": 5.0}),))
    )  # fmt: skip
    [bus] = w.inventory(bus_ports={"f01-a01": "pty"})["bus"]
    clock = ManualClock(datetime(2026, 11, 26, 10, 7, 30, tzinfo=UTC).timestamp())
    baud = 38_400  # the pty carries any rate; a fast one keeps the test quick
    sim = DLT645BusSimulator(
        [SimMeter(m["address"], w.meter_model(m["name"])) for m in bus["meter"]],
        baud=baud,
        clock=clock,
    )
    await sim.start()
    refs = []
    with psycopg.connect(migrated_url) as conn:
        for m in bus["meter"]:
            (device_id,) = conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
                " VALUES (%s, 'meter', 'dlt645', %s, 300, jsonb_build_object('bus', %s::text,"
                " 'address', %s::text)) RETURNING id",
                (m["name"], sim.port, bus["name"], m["address"]),
            ).fetchone()
            refs.append(MeterRef(device_id, m["name"], m["address"]))
    store_ = await PgCollectorStore.open(migrated_url)
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    link = Dlt645Bus(SerialTransport(sim.port, baud=baud), BusTiming(baud=baud, turnaround=0.1))
    collector = Dlt645BusCollector(
        name=bus["name"], bus=link, meters=refs, sink=writer, store=store_,
        policy=BusPolicy(reread_days=1), now=clock,
    )  # fmt: skip
    try:
        await collector.read_daily()
        await writer.flush()
    finally:
        await writer.close()
        await writer_task
        await link.transport.close()
        await sim.stop()
        await store_.close()
    energy, frozen = stored(migrated_url, "1.8.0"), stored(migrated_url, "1.8.0*d")
    b = w.truth.boundaries
    for m in bus["meter"]:
        i = w.grid.index(m["name"])
        got = np.array([energy[(m["name"], int(ts))] for ts in b[:96]])  # the 25th, local
        np.testing.assert_array_equal(got, w.truth.register[i, :96])
        assert frozen[(m["name"], int(b[96]))] == w.truth.register[i, 96]


async def test_area_loss_from_the_database_equals_the_ground_truth(
    migrated_url, mqtt_broker, collector_store
):
    """A served world whose concentrators also read their area's total meter: the area loss
    computed from what PostgreSQL stored, with the inventory's multipliers, equals the
    world's measured loss plus the inventory faults' signatures."""
    faults = (
        Fault("theft", "f01-a01-c002", AT_NOON, {"share": 0.5}),
        Fault("wrong_multiplier", "f01-a02-c003", None, {"ct_ratio": 40}),
    )
    w = build_world(
        WorldSpec(seed=23, start=START, days=1, feeders=1, areas_per_feeder=2,
                  meters_per_area=8, faults=faults)
    )  # fmt: skip
    served = ServedWorld(
        w,
        mqtt_host=mqtt_broker.host,
        mqtt_port=mqtt_broker.port,
        area_totals="local",
        mqtt_accounts=mqtt_broker.concentrators,
    )
    await served.start()
    inv = served.inventory()
    store(migrated_url, inv)
    local = [m for c in inv["concentrator"] for m in c["meters"]]
    expected = sum(
        len(c.day_payload(m, START)["readings"]) for c in served.concentrators for m in c.meters
    )
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    group = f"g{uuid.uuid4().hex[:8]}"
    worker = MqttIngestWorker(
        MqttSettings(
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            group=group,
            client_id=f"w-{group}",
            auth=mqtt_broker.auth(INGEST),
        ),
        writer,
        collector_store,
    )
    worker_task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 15)
        await served.upload_day(START)
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            with psycopg.connect(migrated_url) as conn:
                [(n,)] = conn.execute("SELECT count(*) FROM readings").fetchall()
            if n >= expected:
                break
            await asyncio.sleep(0.1)
        await writer.flush()
    finally:
        await served.stop()
        await worker.drain()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await writer.close()
        await writer_task

    g, t = w.grid, w.truth
    b = t.boundaries
    curve, frozen = stored(migrated_url, "1.8.0"), stored(migrated_url, "1.8.0*d")
    # registers at the 97 boundaries: the 96 curve points and the day's frozen register
    reg = np.array([[curve[(m, int(ts))] for ts in b[:96]] + [frozen[(m, int(b[96]))]]
                    for m in local])  # fmt: skip
    points = {r["meter"]: r for r in inv["metering_point"]}
    mult = np.array([points[m]["ct_ratio"] * points[m]["pt_ratio"] for m in local])
    energy = np.diff(reg, axis=1) * mult[:, None]
    public = [a for a, d in zip(g.areas, g.area_dedicated, strict=True) if not d]
    loss = {a: np.zeros(96) for a in public}
    for m, e in zip(local, energy, strict=True):
        sign = 1.0 if points[m]["role"] == "area_total" else -1.0
        loss[points[m]["area"]] += sign * e
    truth = t.area_balance()["loss"]
    for r in t.fault_records():
        if r["kind"] == "wrong_multiplier":
            [sig] = r["signature"]
            truth[g.areas.index(sig["group"])] += sig["delta_loss"]
    for a in public:
        np.testing.assert_allclose(loss[a], truth[g.areas.index(a)], rtol=1e-9, atol=1e-9)
    # and the theft shows: f01-a01 loses half of c002's consumption from noon on
    j = g.areas.index("f01-a01")
    k = int((AT_NOON.timestamp() - b[0]) // 900)
    stolen = 0.5 * t.energy[g.index("f01-a01-c002"), k:].sum()
    technical = t.area_balance()["technical"][j, k:].sum()
    # summed over intervals the registers telescope: each meter is off by < one 0.01 step
    steps = 0.01 * sum(mult[i] for i, m in enumerate(local) if points[m]["area"] == "f01-a01")
    assert loss["f01-a01"][k:].sum() - technical == pytest.approx(stolen, abs=steps)


# -- the world's inventory through gridread's inventory loader -------------------------------

EVERY_FAULT = {
    "theft": {"share": 0.3},
    "meter_error": {"pct": 3.0},
    "stopped": {},
    "wrong_multiplier": {"ct_ratio": 40},
    "wrong_area": {"area": "f01-a02"},
    "reverse_wiring": {},
    "clock_drift": {"seconds_per_day": 120.0},
    "rollover": {},
    "reset": {},
    "replacement": {},
}


def faulty_world(kinds, at=AT_NOON, **spec):
    """Fault i of `kinds` on customer i + 1 of f01-a01 (an area total for wrong_multiplier:
    a CT ratio is where a multiplier goes wrong), from `at`."""
    faults = tuple(
        Fault(k, "f01-a01-total" if k == "wrong_multiplier" else f"f01-a01-c{i + 1:03d}", at,
              EVERY_FAULT[k])
        for i, k in enumerate(kinds)
    )  # fmt: skip
    return build_world(
        WorldSpec(seed=31, start=START, days=1, feeders=1, areas_per_feeder=2,
                  meters_per_area=len(kinds) + 2, faults=faults, **spec)
    )  # fmt: skip


def stored_points(url) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT d.name, mp.role, coalesce(a.name, f.name), mp.ct_ratio * mp.pt_ratio,"
            " CASE WHEN isfinite(mp.valid_from) THEN mp.valid_from END, mp.valid_to"
            " FROM metering_points mp JOIN devices d ON d.id = mp.device_id"
            " LEFT JOIN areas a ON a.id = mp.area_id LEFT JOIN feeders f ON f.id = mp.feeder_id"
            " ORDER BY 1, 5 NULLS FIRST"
        ).fetchall()


def expected_points(inv) -> list[tuple]:
    rows = [
        (p["meter"], p["role"], p.get("area", p.get("feeder")),
         float(p["ct_ratio"] * p["pt_ratio"]), p.get("valid_from"), p.get("valid_to"))
        for p in inv["metering_point"]
    ]  # fmt: skip
    return sorted(rows, key=lambda r: (r[0], r[4] is not None, r[4]))


@pytest.mark.parametrize("kind", sorted(EVERY_FAULT))
def test_the_inventory_loader_takes_a_world_with_each_fault(migrated_url, kind):
    """Each fault kind, alone, from noon: what the loader stores is what the inventory says
    (an inventory fault splits the meter's point at noon; a replacement adds a meter)."""
    w = faulty_world([kind])
    inv = w.inventory()
    ids = store(migrated_url, inv)
    assert expected_points(inv) == stored_points(migrated_url)
    b = w.truth.boundaries
    k = int((AT_NOON.timestamp() - b[0]) // 900)
    noon = datetime.fromtimestamp(int(b[k]), UTC)

    def rows(meter):
        return [p[2:] for p in stored_points(migrated_url) if p[0] == meter]

    if kind == "wrong_multiplier":  # the true CT until noon, 40 after
        true = w.grid.multiplier[w.grid.index("f01-a01-total")]
        assert rows("f01-a01-total") == [("f01-a01", true, None, noon), ("f01-a01", 40, noon, None)]
    elif kind == "wrong_area":
        assert rows("f01-a01-c001") == [("f01-a01", 1, None, noon), ("f01-a02", 1, noon, None)]
    elif kind == "replacement":
        assert rows("f01-a01-c001") == [("f01-a01", 1, None, noon)]
        assert rows("f01-a01-c001-r") == [("f01-a01", 1, noon, None)]
    else:
        assert rows("f01-a01-c001") == [("f01-a01", 1, None, None)]
    with psycopg.connect(migrated_url) as conn:
        replaced = conn.execute(
            "SELECT o.name, n.name, r.at, r.old_final, r.new_first"
            " FROM meter_replacements r JOIN devices o ON o.id = r.old_device_id"
            " JOIN devices n ON n.id = r.new_device_id"
        ).fetchall()
    if kind == "replacement":
        final = w.truth.register[w.grid.index("f01-a01-c001"), k]
        assert "f01-a01-c001-r" in ids
        assert replaced == [("f01-a01-c001", "f01-a01-c001-r", noon, final, 0.0)]
    else:
        assert replaced == []


@pytest.mark.parametrize(
    ("at", "where"),
    [(AT_NOON, {}), (None, {"area_totals": "local"}), (AT_NOON, {"bus_ports": {"f01-a02": "pty"}})],
)
def test_the_inventory_loader_takes_a_world_with_every_fault(migrated_url, at, where):
    """All fault kinds at once (from noon, or from the start: an inventory fault is then the
    only row), area totals on Modbus or read locally, an area on a bus; loading it twice
    changes nothing."""
    w = faulty_world(sorted(EVERY_FAULT), at)
    inv = w.inventory(**where)
    ids = store(migrated_url, inv)
    assert set(w.grid.meters) <= set(ids)  # and the concentrators
    assert expected_points(inv) == stored_points(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        [(n,)] = conn.execute("SELECT count(*) FROM audit_log").fetchall()
        store(migrated_url, inv)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (n,)
        assert conn.execute("SELECT count(*) FROM meter_replacements").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM meter_assets").fetchone() == (len(w.grid.meters),)
