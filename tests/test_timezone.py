"""The time zone of meter clocks and local days: one site setting (`timezone`), which a bus
or a concentrator may override, and which the API's local days follow."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.exceptions import ConfigError
from collectors.mqtt.rereads import ConcentratorRereader
from gridread.inventory import parse_inventory, store_inventory
from gridread.settings import load_settings
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.schema import ensure_partitions
from tests.api_auth import credentials
from tests.api_seed import seed

CONFIG = {
    "timezone": "Europe/Berlin",
    "bus": [
        {"name": "b-site", "port": "/dev/ttyUSB0"},
        {"name": "b-own", "port": "/dev/ttyUSB1", "timezone": "Asia/Urumqi"},
    ],
    "concentrator": [
        {"name": "c-site", "area": "a1"},
        {"name": "c-own", "area": "a2", "timezone": "UTC"},
    ],
}


def inventory_of(config: dict):
    settings = load_settings(config, source="t.toml")
    return settings, parse_inventory(
        config, source="t.toml", base_dir=Path("."), timezone=settings.timezone
    )


def test_buses_and_concentrators_fall_back_to_the_site_timezone(monkeypatch):
    monkeypatch.delenv("GRIDREAD_TIMEZONE", raising=False)
    settings, inv = inventory_of(CONFIG)
    assert settings.timezone == "Europe/Berlin"
    assert [b.timezone for b in inv.buses] == ["Europe/Berlin", "Asia/Urumqi"]
    assert [c.timezone for c in inv.concentrators] == ["Europe/Berlin", "UTC"]


def test_the_environment_overrides_the_file_and_the_default_is_one_constant(monkeypatch):
    monkeypatch.setenv("GRIDREAD_TIMEZONE", "America/Sao_Paulo")
    settings, inv = inventory_of(CONFIG)
    assert settings.timezone == "America/Sao_Paulo"
    assert inv.buses[0].timezone == "America/Sao_Paulo"
    monkeypatch.delenv("GRIDREAD_TIMEZONE")
    settings, inv = inventory_of({"bus": CONFIG["bus"][:1]})
    assert settings.timezone == DEFAULT_TIMEZONE == inv.buses[0].timezone


@pytest.mark.parametrize(
    "config, where",
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"concentrator": [{"name": "c", "area": "a", "timezone": "Nowhere"}]}, "concentrator 1"),
    ],
)
def test_an_unknown_timezone_is_a_one_line_config_error(monkeypatch, config, where):
    monkeypatch.delenv("GRIDREAD_TIMEZONE", raising=False)
    with pytest.raises(ConfigError, match=f"{where}.*not a known time zone") as err:
        inventory_of(config)
    assert "\n" not in str(err.value)


def test_the_api_counts_frozen_days_in_the_site_timezone(migrated_url):
    # jzq1-m01's frozen value is stamped 2026-11-26 00:00 in Shanghai (16:00 UTC the day before)
    seed(migrated_url)
    day = {"day": "2026-11-25"}
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "viewer"),
    ) as client:
        [c] = client.get("/concentrators/read-stats", params=day).json()
        assert (c["due"], c["read"]) == (1, 1)
    with TestClient(
        create_app(migrated_url, timezone="UTC"), headers=credentials(migrated_url, "viewer")
    ) as client:
        [c] = client.get("/concentrators/read-stats", params=day).json()
        assert (c["due"], c["read"]) == (1, 0)


def stored_concentrators(url: str, site_tz: str) -> dict[str, int]:
    """Two concentrators of one meter each, one on the site's zone and one on its own (UTC);
    each meter has its frozen value of 2026-11-25 stamped at the midnight of its zone."""
    config = {
        "timezone": site_tz,
        "concentrator": [
            {"name": "c-site", "area": "a1", "meters": ["c-site-m1"]},
            {"name": "c-utc", "area": "a2", "meters": ["c-utc-m1"], "timezone": "UTC"},
        ],
    }
    _settings, inv = inventory_of(config)
    with psycopg.connect(url) as conn:
        ids = store_inventory(conn, inv, actor="test")
        ensure_partitions(conn, {date(2026, 11, 25), date(2026, 11, 26)})
        for meter, zone in (("c-site-m1", site_tz), ("c-utc-m1", "UTC")):
            conn.execute(
                "INSERT INTO readings (device_id, quantity, ts, value, quality)"
                " VALUES (%s, '1.8.0*d', %s, 1234.5, 0)",
                (ids[meter], datetime(2026, 11, 26, tzinfo=ZoneInfo(zone))),
            )
    return ids


def test_a_concentrators_own_timezone_decides_its_frozen_days(migrated_url, monkeypatch):
    monkeypatch.delenv("GRIDREAD_TIMEZONE", raising=False)
    stored_concentrators(migrated_url, "Asia/Shanghai")
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "viewer"),
    ) as client:
        stats = client.get("/concentrators/read-stats", params={"day": "2026-11-25"}).json()
    assert {c["concentrator"]: (c["due"], c["read"]) for c in stats} == {
        "c-site": (1, 1),
        "c-utc": (1, 1),  # frozen at UTC midnight, not Shanghai's
    }


async def test_re_read_windows_are_the_concentrators_local_days(
    migrated_url, collector_store, mqtt_broker, monkeypatch
):
    monkeypatch.delenv("GRIDREAD_TIMEZONE", raising=False)
    stored_concentrators(migrated_url, "Asia/Shanghai")
    asked: dict[str, dict] = {}
    got_both = threading.Event()
    listener = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)

    def on_message(client, userdata, message):
        asked[message.topic.split("/")[3]] = json.loads(message.payload)
        if len(asked) == 2:
            got_both.set()

    subscribed = threading.Event()
    listener.on_message = on_message
    listener.on_subscribe = lambda *a: subscribed.set()
    listener.on_connect = lambda c, *a: c.subscribe("gridread/ctl/v1/+/reread", qos=1)
    listener.connect(mqtt_broker.host, mqtt_broker.port)
    listener.loop_start()
    rereader = ConcentratorRereader(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        store=collector_store,
        timezone="Asia/Shanghai",
        days=2,
        timeout=0.2,  # nobody answers: only the requests are looked at
    )
    try:
        assert subscribed.wait(10)
        await rereader.start()
        # 2026-11-27 20:00 UTC: already the 28th in Shanghai, still the 27th in UTC
        await rereader.run_once(now=datetime(2026, 11, 27, 20, 0, tzinfo=UTC))
        assert await asyncio.to_thread(got_both.wait, 10)
    finally:
        await rereader.stop()
        listener.loop_stop()
        listener.disconnect()
    assert (asked["c-site"]["from"], asked["c-site"]["to"]) == (
        "2026-11-26T00:00:00+08:00",
        "2026-11-28T00:00:00+08:00",
    )
    assert (asked["c-utc"]["from"], asked["c-utc"]["to"]) == (
        "2026-11-25T00:00:00+00:00",
        "2026-11-27T00:00:00+00:00",
    )
