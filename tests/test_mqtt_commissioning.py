"""Commissioning dates from the config file: validated, stored as the `commissioned`
attribute, and a floor of the MQTT worker's plausible window (config → store_inventory →
worker, against a real Mosquitto and a real PostgreSQL)."""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from collectors.exceptions import ConfigError
from gridread.inventory import parse_inventory, store_inventory
from tests.test_mqtt_hostile import good, publish, rows, running_worker, wait_for

CONFIG = """
[[concentrator]]
name = "c-jzq"
area = "c-area"
meters = ["c-m1"]
timezone = "Asia/Shanghai"
commissioned = 2026-06-01

[[voltage_monitor]]
name = "c-vm"
port = "/dev/ttyUSB9"
commissioned = 2025-01-15

[[bus]]
name = "c-bus"
port = "/dev/ttyUSB8"
timezone = "Europe/Paris"
[[bus.meter]]
name = "c-dlt"
address = "202107070001"
commissioned = 2025-07-01
"""


def inventory(text: str = CONFIG):
    return parse_inventory(tomllib.loads(text), source="site.toml", base_dir=Path("."))


def test_commissioning_dates_are_stored_as_local_midnight_in_the_devices_zone(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
    got = dict(rows(migrated_url, "SELECT name, attributes->>'commissioned' FROM devices"))
    assert got == {
        "c-jzq": "2026-06-01T00:00:00+08:00",
        "c-m1": None,  # a concentrator's date is its own, not its meters' (see README)
        "c-vm": "2025-01-15T00:00:00+08:00",  # the site's zone (default Asia/Shanghai)
        "c-dlt": "2025-07-01T00:00:00+02:00",  # the bus's zone, summer time
    }


@pytest.mark.parametrize(
    "table",
    [
        '[[concentrator]]\nname = "x"\narea = "a"\ncommissioned = {d}',
        '[[voltage_monitor]]\nname = "x"\nport = "/dev/ttyS0"\ncommissioned = {d}',
        '[[bus]]\nname = "b"\nport = "/dev/ttyS0"\n[[bus.meter]]\nname = "x"\n'
        'address = "000000000001"\ncommissioned = {d}',
        '[[device]]\nname = "x"\nprotocol = "modbus_tcp"\nhost = "h"\n'
        'register_map = "three_phase_meter"\ncommissioned = {d}',
    ],
)
def test_a_commissioning_date_in_the_future_is_a_one_line_error(table):
    future = (datetime.now(UTC) + timedelta(days=2)).date()
    with pytest.raises(ConfigError) as err:
        inventory(table.format(d=future.isoformat()))
    message = str(err.value)
    assert "\n" not in message and "commissioned" in message and "future" in message
    inventory(table.format(d="2024-03-01"))  # a past date is fine


async def test_a_reading_before_the_configured_commissioning_is_dead_lettered(
    migrated_url, mqtt_broker
):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
    # the concentrator went into service at 2026-06-01 00:00 in Shanghai = 05-31 16:00 UTC
    before, after = datetime(2026, 5, 31, 15, tzinfo=UTC), datetime(2026, 5, 31, 17, tzinfo=UTC)
    messages = [
        good("c-jzq", value=1.0, ts=before),
        good("c-jzq", value=2.0, ts=after),
        good("c-m1", value=3.0, ts=before),  # its meter: bounded by the global floor only
    ]
    async with running_worker(migrated_url, mqtt_broker) as (_worker, task):
        await asyncio.to_thread(publish, mqtt_broker, messages)
        assert await wait_for(migrated_url, "SELECT count(*) FROM readings", 2) == 2
        assert await wait_for(migrated_url, "SELECT count(*) FROM dead_letters", 1) == 1
        assert not task.done()
    assert rows(migrated_url, "SELECT value FROM readings ORDER BY 1") == [(2.0,), (3.0,)]
    [(reason, topic)] = rows(migrated_url, "SELECT reason, payload->>'topic' FROM dead_letters")
    assert "not before 2026-06-01T00:00:00+08:00" in reason
    assert topic == "gridread/v1/c-jzq/readings"
