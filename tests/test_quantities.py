"""The quantity registry: the shipped OBIS set for three-phase meters, and quantities a config
adds with `[[quantity]]` tables (validated, one-line errors, seen by maps and the API)."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.exceptions import ConfigError
from gridread.inventory import parse_inventory
from ingest.exceptions import UnknownQuantity
from ingest.quantities import QuantityKind, quantity, registry
from tests.api_auth import credentials


@pytest.fixture(autouse=True)
def _builtin_only():
    parse_inventory({}, source="reset", base_dir=Path("."))  # no [[quantity]]: built-ins only
    yield
    parse_inventory({}, source="reset", base_dir=Path("."))


@pytest.mark.parametrize(
    ("code", "unit", "kind"),
    [
        ("21.7.0", "kW", "instantaneous"),  # active power L1 / L2 / L3
        ("41.7.0", "kW", "instantaneous"),
        ("61.7.0", "kW", "instantaneous"),
        ("33.7.0", "", "instantaneous"),  # power factor L1 / L2 / L3
        ("53.7.0", "", "instantaneous"),
        ("73.7.0", "", "instantaneous"),
        ("23.7.0", "kvar", "instantaneous"),  # reactive power L1
        ("29.7.0", "kVA", "instantaneous"),  # apparent power L1
        ("32.7.124", "%", "instantaneous"),  # THD of voltage L1
        ("31.7.124", "%", "instantaneous"),  # THD of current L1
        ("81.7.1", "°", "instantaneous"),  # angle U(L2) to U(L1)
        ("81.7.4", "°", "instantaneous"),  # angle I(L1) to U(L1)
        ("81.7.26", "°", "instantaneous"),  # angle I(L3) to U(L3)
        ("132.7.0", "V", "instantaneous"),  # line voltage L1–L2 (no OBIS code: C ≥ 128)
        ("5.8.0", "kvarh", "register"),  # reactive energy QI
        ("21.8.0", "kWh", "register"),  # active energy import L1
    ],
)
def test_the_common_three_phase_set_is_shipped(code, unit, kind):
    q = quantity(code)
    assert (q.unit, q.kind) == (unit, QuantityKind(kind)) and q.name


def test_a_config_adds_quantities_that_maps_and_the_api_see(tmp_path, migrated_url):
    (tmp_path / "m.toml").write_text(
        '[[field]]\nquantity = "1.7.128"\naddress = 0\ntype = "float32"\n'
    )
    config = {
        "quantity": [
            {"code": "1.7.128", "name": "active power, demand window", "unit": "kW"},
            {"code": "0.4.2", "name": "CT ratio", "unit": "", "kind": "instantaneous"},
            {"code": "1.8.0*m", "name": "monthly frozen import", "unit": "kWh", "kind": "register"},
        ],
        "device": [
            {
                "name": "m1",
                "protocol": "modbus_tcp",
                "host": "127.0.0.1",
                "register_map": "m.toml",
            }
        ],
    }
    inventory = parse_inventory(config, source="g.toml", base_dir=tmp_path)
    assert inventory.maps["m.toml"].fields[0].quantity == "1.7.128"
    assert quantity("1.7.128").kind is QuantityKind.INSTANTANEOUS  # the default kind
    assert quantity("1.8.0*m").kind is QuantityKind.REGISTER
    with TestClient(
        create_app(migrated_url), headers=credentials(migrated_url, "viewer")
    ) as client:
        listed = {q["obis"]: q for q in client.get("/quantities").json()}
    assert listed["0.4.2"] == {
        "obis": "0.4.2",
        "name": "CT ratio",
        "unit": "",
        "kind": "instantaneous",
    }
    assert "1.8.0" in listed  # the built-ins stay

    parse_inventory({}, source="g.toml", base_dir=tmp_path)  # a config without them
    with pytest.raises(UnknownQuantity):
        quantity("1.7.128")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"code": "1.7", "name": "x", "unit": "kW"}, "quantity 1 (1.7): code: String should match"),
        ({"code": "1.7.200", "unit": "kW"}, "quantity 1 (1.7.200): name: Field required"),
        (
            {"code": "1.7.200", "name": "x", "unit": "kW", "kind": "counter"},
            "kind: Input should be 'register' or 'instantaneous'",
        ),
        ({"code": "1.7.200", "name": "x", "unit": "kW", "scale": 2}, "scale: Extra inputs"),
        (
            {"code": "32.7.0", "name": "my voltage", "unit": "V"},
            "quantity 1 (32.7.0): 32.7.0 is built in (voltage, phase A (L1)); choose another code",
        ),
    ],
)
def test_bad_quantity_is_a_one_line_error(entry, message):
    with pytest.raises(ConfigError) as err:
        parse_inventory({"quantity": [entry]}, source="g.toml", base_dir=Path("."))
    text = str(err.value)
    assert text.startswith("g.toml: ") and message in text and "\n" not in text
    assert "1.7.200" not in registry()


def test_a_quantity_defined_twice_is_an_error():
    entry = {"code": "1.7.200", "name": "x", "unit": "kW"}
    with pytest.raises(ConfigError, match=r"quantity 2 \(1.7.200\): defined twice"):
        parse_inventory({"quantity": [entry, entry]}, source="g.toml", base_dir=Path("."))
