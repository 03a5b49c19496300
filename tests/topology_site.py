"""A small site for the topology tests: meters of every protocol (a Modbus [[device]], a
DL/T 645 [[bus.meter]], a [[concentrator]]'s meters) placed in one feeder with a public and a
dedicated area, a meter moved on a date, a multiplier changed, and a replacement."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gridread.inventory import Inventory, parse_inventory

DEVICES = """
[[device]]
name = "f-01-head"
protocol = "modbus_tcp"
host = "192.0.2.10"
register_map = "three_phase_meter"

[[bus]]
name = "bus-1"
port = "/dev/ttyUSB0"
[[bus.meter]]
name = "a-01-total"
address = "202107070001"
[[bus.meter]]
name = "a-02-total"
address = "202107070002"

[[concentrator]]
name = "jzq-1"
area = "a-01"
meters = ["a-01-c0001", "a-01-c0002", "a-01-c0002r", "d-01-meter"]
"""

TOPOLOGY = """
[[substation]]
name = "sub-01"
voltage_kv = 35

[[feeder]]
name = "f-01"
substation = "sub-01"

[[area]]
name = "a-01"
feeder = "f-01"
transformer_kva = 400

[[area]]
name = "a-02"
feeder = "f-01"
transformer_kva = 200

[[area]]
name = "d-01"
feeder = "f-01"
kind = "dedicated"
transformer_kva = 630

[[metering_point]]
meter = "f-01-head"
role = "feeder_head"
feeder = "f-01"
ct_ratio = 200
pt_ratio = 100

[[metering_point]]
meter = "a-01-total"
role = "area_total"
area = "a-01"
ct_ratio = 80
valid_to = 2026-03-01

[[metering_point]]
meter = "a-01-total"
role = "area_total"
area = "a-01"
ct_ratio = 120
valid_from = 2026-03-01

[[metering_point]]
meter = "a-02-total"
role = "area_total"
area = "a-02"
ct_ratio = 40

[[metering_point]]
meter = "d-01-meter"
role = "area_total"
area = "d-01"
ct_ratio = 50
pt_ratio = 100
customer_class = "industrial"

[[metering_point]]
meter = "a-01-c0001"
role = "customer"
area = "a-01"
phase = "B"
customer_class = "residential"
tariff = "residential-tou"
valid_to = 2026-03-01

[[metering_point]]
meter = "a-01-c0001"
role = "customer"
area = "a-02"
phase = "A"
customer_class = "residential"
valid_from = 2026-03-01

[[metering_point]]
meter = "a-01-c0002"
role = "customer"
area = "a-01"
valid_from = 2026-01-01T00:00:00+08:00
valid_to = 2026-11-10T10:30:00+08:00

[[metering_point]]
meter = "a-01-c0002r"
role = "customer"
area = "a-01"
valid_from = 2026-11-10T10:30:00+08:00

[[meter_asset]]
meter = "a-01-c0001"
model = "DDZY71"
accuracy_class = "2"
installed = 2024-03-01
last_verified = 2024-02-20
next_verification = 2032-02-20
rotation_plan = "2032"

[[meter_asset]]
meter = "a-02-total"
accuracy_class = "0.5S"
ct_class = "0.2S"
next_verification = 2026-12-01

[[replacement]]
old_meter = "a-01-c0002"
new_meter = "a-01-c0002r"
at = 2026-11-10T10:30:00+08:00
old_final = 12345.67
new_first = 0.0
"""


def config(topology: str = TOPOLOGY) -> dict[str, Any]:
    return tomllib.loads(DEVICES + topology)


def inventory(topology: str = TOPOLOGY, **kw: Any) -> Inventory:
    return parse_inventory(config(topology), source="site.toml", base_dir=Path("."), **kw)
