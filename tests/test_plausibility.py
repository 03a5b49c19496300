"""The plausibility screen: absurd values are stored flagged SUSPECT, plausible ones untouched;
at ingest (the writer, real PostgreSQL) and from a Modbus meter read with the wrong word order
(simulator over real TCP)."""

import asyncio
import math
import random
from datetime import UTC, datetime

import psycopg
import pytest

from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.registermap import parse_register_map
from gridread.inventory import DeviceSpec, Inventory, store_inventory
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
    ],
)
def test_bad_rules_are_a_one_line_error(tmp_path, rules, message):
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    with pytest.raises(ValueError) as err:
        load_rules(path)
    assert message in str(err.value) and "\n" not in str(err.value)


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
