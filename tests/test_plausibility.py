"""The plausibility screen: absurd values are stored flagged SUSPECT, plausible ones untouched;
at ingest (the writer, real PostgreSQL) and from a Modbus meter read with the wrong word order
(simulator over real TCP)."""

import asyncio
import math
import random
import tomllib
from datetime import UTC, datetime

import psycopg
import pytest

from collectors.exceptions import ConfigError
from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.registermap import parse_register_map
from gridread.inventory import (
    DeviceSpec,
    Inventory,
    parse_inventory,
    store_inventory,
    stored_nominals,
)
from gridread.runtime import plausibility_screen
from gridread.settings import load_settings
from ingest.model import Quality, Reading
from ingest.plausibility import load_rules
from ingest.writer import ReadingWriter
from simulators.meter_model import MeterModel
from simulators.modbus_meter import ManualClock, ModbusMeterSimulator

TS = datetime(2026, 11, 20, 8, tzinfo=UTC)
SUSPECT = int(Quality.SUSPECT)


@pytest.mark.parametrize(
    ("quantity", "value", "suspect"),
    [
        ("32.7.0", 231.6, False),
        ("32.7.0", 4e-08, True),  # seen from a wrong map: 4e-08 V
        ("32.7.0", 0.0, False),  # a lost phase reads exactly 0 V
        ("32.7.0", 400.0, True),
        ("132.7.0", 398.0, False),  # line voltage
        ("14.7.0", 49.98, False),
        ("14.7.0", 1.95e-20, True),
        ("1.8.0", 1234.56, False),
        ("1.8.0", -4.1e23, True),  # a wrong word order
        ("1.8.0", 2e12, True),
        ("1.8.0*d", -1.0, True),  # a frozen register follows its live one
        ("15.8.0", -12.34, False),  # combined energy carries a sign
        ("2.8.0", 0.0, False),
        ("13.7.0", -0.95, False),
        ("13.7.0", 1.5, True),
        ("1.7.0", -3.5, False),  # export is negative power
        ("1.7.0", math.inf, True),
        ("31.7.0", math.nan, True),
        ("81.7.4", -25.8, False),
    ],
)
def test_ranges(quantity, value, suspect):
    r = Reading(1, quantity, TS, value, int(Quality.RE_READ))
    assert load_rules().flag([r]) == int(suspect)
    assert r.quality == int(Quality.RE_READ) | (SUSPECT if suspect else 0)  # other flags kept


def test_unknown_quantity_and_bad_values_pass_through():
    # no rule and no registry entry: only non-finite values are suspect; a string is left
    # for the writer to dead-letter
    screen = load_rules()
    readings = [
        Reading(1, "9.9.9", TS, 1e30),
        Reading(1, "9.9.9", TS, math.nan),
        Reading(1, "32.7.0", TS, "230"),  # type: ignore[arg-type]
    ]
    assert screen.flag(readings) == 1 and [r.quality for r in readings] == [0, SUSPECT, 0]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ('[[rule]]\nquantities = ["14.7.0"]\nmin = 65\nmax = 45\n', "rule 1: expected min < max"),
        ('[[rule]]\nkind = "counter"\nmin = 0\nmax = 1\n', "rule 1: kind = 'counter'"),
        ('[[rule]]\nquantities = ["14.7.0"]\nmin = 45\nmax = 65\nmaks = 1\n', "unknown key(s)"),
        ('[[rule]]\nquantities = ["32.7.0"]\nnominal = 220\nlow = 0.5\n', "nominal with low"),
        (
            '[[rule]]\nquantities = ["32.7.0"]\nnominal = "neutral"\nlow = 0.5\nhigh = 1.5\n',
            "rule 1: nominal = 'neutral'",
        ),
    ],
)
def test_bad_rules_are_a_one_line_error(tmp_path, rules, message):
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    with pytest.raises(ValueError) as err:
        load_rules(path)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("quantity", "value", "suspect"),
    [
        ("32.7.0", 58.0, False),  # a meter on 3×57.7/100 V PTs
        ("32.7.0", 230.0, True),
        ("32.7.0", 0.0, False),
        ("132.7.0", 100.0, False),  # its line voltage: √3 × 57.7
        ("132.7.0", 400.0, True),
        ("14.7.0", 50.0, False),  # not a voltage: no nominal
    ],
)
def test_a_device_is_screened_against_its_own_nominal_voltage(quantity, value, suspect):
    screen = load_rules().for_devices({7: 57.7})
    own, other = Reading(7, quantity, TS, value), Reading(8, quantity, TS, value)
    assert screen.flag([own]) == int(suspect)
    assert own.quality == (SUSPECT if suspect else 0)
    # the other device is at the default nominal, 220 V, the shipped screen's
    assert screen.flag([other]) == load_rules().flag([Reading(8, quantity, TS, value)])


def test_readings_of_devices_mixed_in_one_batch_each_get_their_own_range():
    screen = load_rules().for_devices({7: 57.7, 9: 57.7})
    values = [(7, 58.0), (8, 58.0), (8, 230.0), (7, 230.0), (9, 58.0), (7, 58.0), (8, 230.0)]
    readings = [Reading(d, "32.7.0", TS, v) for d, v in values]
    assert screen.flag(readings) == 2
    assert [r.quality for r in readings] == [0, SUSPECT, 0, SUSPECT, 0, 0, 0]


def test_the_default_nominal_is_the_sites():
    screen = load_rules().for_devices({}, default_nominal=57.7)
    readings = [Reading(1, "32.7.0", TS, 58.0), Reading(1, "32.7.0", TS, 230.0)]
    assert screen.flag(readings) == 1 and [r.quality for r in readings] == [0, SUSPECT]


@pytest.mark.parametrize(
    ("table", "where"),
    [
        (
            '[[device]]\nname = "d"\nprotocol = "modbus_tcp"\nhost = "h"\n'
            'register_map = "three_phase_meter"\n',
            "device 1 (d)",
        ),
        ('[[bus]]\nname = "b"\nport = "/dev/null"\n', "bus 1 (b)"),
        (
            '[[bus]]\nname = "b"\nport = "/dev/null"\n[[bus.meter]]\nname = "m"\n'
            'address = "000000000001"\n',
            "bus 1 (b)",
        ),
        ('[[voltage_monitor]]\nname = "v"\nport = "/dev/null"\n', "voltage_monitor 1 (v)"),
        ('[[concentrator]]\nname = "c"\narea = "a"\n', "concentrator 1 (c)"),
    ],
)
@pytest.mark.parametrize("value", ["0", "-57.7", "inf", '"high"'])
def test_a_bad_nominal_voltage_is_a_one_line_error(tmp_path, table, where, value):
    config = tomllib.loads(f"{table}nominal_voltage = {value}\n")
    with pytest.raises(ConfigError) as err:
        parse_inventory(config, source="site.toml", base_dir=tmp_path)
    assert f"site.toml: {where}" in str(err.value) and "nominal_voltage" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(tomllib.loads(f"nominal_voltage = {value}\n"), source="site.toml")
    assert "site.toml: nominal_voltage" in str(err.value) and "\n" not in str(err.value)


SITE = """
nominal_voltage = 230.0

[[device]]                    # on 3×57.7/100 V PTs
name = "pt-meter"
protocol = "modbus_tcp"
host = "192.0.2.10"
register_map = "three_phase_meter"
nominal_voltage = 57.7

[[device]]                    # the site's 230 V
name = "lv-meter"
protocol = "modbus_tcp"
host = "192.0.2.11"
register_map = "three_phase_meter"

[[bus]]
name = "bus-1"
port = "/dev/ttyUSB0"
nominal_voltage = 57.7
[[bus.meter]]                 # the bus's
name = "bus-pt"
address = "000000000001"
[[bus.meter]]                 # its own
name = "bus-lv"
address = "000000000002"
nominal_voltage = 220.0

[[voltage_monitor]]
name = "vm"
port = "/dev/ttyUSB1"
nominal_voltage = 57.7

[[concentrator]]              # a 10 kV feeder's meters reporting primary values
name = "jzq"
area = "feeder-7"
meters = ["feeder-7-m1"]
nominal_voltage = 5773.5
"""


async def test_nominal_voltages_from_the_config_to_the_stored_quality(tmp_path, migrated_url):
    config = tomllib.loads(SITE)
    settings = load_settings(config)
    inventory = parse_inventory(config, source="site.toml", base_dir=tmp_path)
    with psycopg.connect(migrated_url) as conn:
        ids = store_inventory(conn, inventory, actor="test")
        stored = stored_nominals(conn)
    # serve() builds its screen from the inventory, mqtt-ingest from the devices table
    assert stored == inventory.nominals(ids)
    screen = plausibility_screen(settings, stored)
    values = {"a": 58.0, "b": 230.0, "c": 5800.0}
    writer = ReadingWriter(migrated_url, max_delay=0.05, screen=screen)
    task = asyncio.create_task(writer.run())
    for device_id in ids.values():
        for minute, value in enumerate(values.values()):
            ts = TS.replace(minute=minute)
            await writer.add_many([Reading(device_id, "32.7.0", ts, value)])
    await writer.flush()
    await writer.close()
    await task
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT d.name, r.value, r.quality FROM readings r JOIN devices d ON d.id = r.device_id"
        ).fetchall()
    plausible = {(name, value) for name, value, quality in rows if quality == 0}
    assert len(rows) == 3 * len(ids)
    assert plausible == {
        ("pt-meter", 58.0),
        ("bus-pt", 58.0),
        ("vm", 58.0),
        ("lv-meter", 230.0),
        ("bus-lv", 230.0),
        ("jzq", 5800.0),
        ("feeder-7-m1", 5800.0),
    }


async def test_the_writer_stores_absurd_values_flagged(migrated_url):
    spec = DeviceSpec(name="m1", protocol="modbus_tcp", host="h", register_map="x")
    with psycopg.connect(migrated_url) as conn:
        [device_id] = store_inventory(conn, Inventory([spec], {}), actor="test").values()
    values = {"32.7.0": 4e-08, "52.7.0": 229.9, "14.7.0": 1.95e-20, "1.8.0": -4.1e23, "2.8.0": 5.0}
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    task = asyncio.create_task(writer.run())
    await writer.add_many([Reading(device_id, q, TS, v) for q, v in values.items()])
    await writer.flush()
    await writer.close()
    await task
    with psycopg.connect(migrated_url) as conn:
        stored = dict(conn.execute("SELECT quantity, quality FROM readings").fetchall())
    assert stored == {
        "32.7.0": SUSPECT,
        "52.7.0": 0,
        "14.7.0": SUSPECT,
        "1.8.0": SUSPECT,
        "2.8.0": 0,
    }


async def test_a_wrong_word_order_gives_suspect_readings():
    """The meter sends float32 high word first; the map says low word first."""

    def regmap(order):
        fields = [
            {"quantity": q, "address": 2 * i, "type": "float32"}
            for i, q in enumerate(("32.7.0", "52.7.0", "14.7.0"))
        ]
        return parse_register_map({"word_order": order, "field": fields}, source="m", name="m")

    sim = ModbusMeterSimulator(
        regmap("big"),
        {1: MeterModel.random(random.Random(3))},
        clock=ManualClock(TS.timestamp()),
    )
    await sim.start()
    got: list[Reading] = []

    class Keep:
        async def add_many(self, readings):
            got.extend(readings)

        async def flush(self):
            pass

    try:
        for order in ("big", "little"):
            collector = ModbusTcpCollector(
                device_id=1,
                device_name="m1",
                host="127.0.0.1",
                port=sim.port,
                unit_id=1,
                register_map=regmap(order),
            )
            await collector.gather(Keep())
            await collector.close()
    finally:
        await sim.stop()
    screen = load_rules()
    right, wrong = got[:3], got[3:]
    assert screen.flag(right) == 0
    assert screen.flag(wrong) == 3, [(r.quantity, r.value) for r in wrong]
