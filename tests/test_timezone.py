"""The time zone of meter clocks and local days: one site setting (`timezone`), which a bus
or a concentrator may override, and which the API's local days follow."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.exceptions import ConfigError
from gridread.inventory import parse_inventory
from gridread.settings import load_settings
from ingest.localtime import DEFAULT_TIMEZONE
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
    with TestClient(create_app(migrated_url, timezone="Asia/Shanghai")) as client:
        [c] = client.get("/concentrators/read-stats", params=day).json()
        assert (c["due"], c["read"]) == (1, 1)
    with TestClient(create_app(migrated_url, timezone="UTC")) as client:
        [c] = client.get("/concentrators/read-stats", params=day).json()
        assert (c["due"], c["read"]) == (1, 0)
