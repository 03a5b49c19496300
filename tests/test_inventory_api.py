"""Inventory CRUD over HTTP against a real PostgreSQL: permissions, the inventory file's
validation, an audit row per change with the caller as actor, placements, deletes that would
orphan something refused, and the rule between the config file's sync and API edits."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.exceptions import ConfigError
from gridread.inventory import store_inventory
from gridread.inventory_overrides import FILE_ACTOR
from tests.api_auth import credentials
from tests.topology_site import TOPOLOGY, inventory

PROBLEM = "application/problem+json"


@pytest.fixture
def site(migrated_url: str) -> str:
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(TOPOLOGY), actor=FILE_ACTOR)
    return migrated_url


@pytest.fixture
def client(site: str) -> Iterator[TestClient]:
    with TestClient(create_app(site), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def engineer(site: str) -> dict[str, str]:
    return credentials(site, "metering_engineer", "eng")


@pytest.fixture
def viewer(site: str) -> dict[str, str]:
    return credentials(site, "viewer")


def audit(url: str, entity: str, entity_id: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT actor, action, before, after FROM audit_log"
            " WHERE entity = %s AND entity_id = %s ORDER BY id",
            (entity, entity_id),
        ).fetchall()


def test_reads_need_read_and_writes_need_inventory_write(client, viewer, engineer):
    assert client.get("/inventory/substations").status_code == 401
    r = client.get("/inventory/substations", headers=viewer)
    assert r.status_code == 200 and r.json() == [{"name": "sub-01", "voltage_kv": 35.0}]
    body = {"name": "sub-02", "voltage_kv": 110}
    r = client.put("/inventory/substations/sub-02", json=body, headers=viewer)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"] == "permission 'inventory.write' needed"
    assert client.put("/inventory/substations/sub-02", json=body).status_code == 401
    assert client.get("/inventory/substations/sub-02", headers=viewer).status_code == 404


def test_create_replace_and_delete_are_audited_with_the_caller(site, client, engineer):
    r = client.put(
        "/inventory/substations/sub-02",
        json={"name": "sub-02", "voltage_kv": 110},
        headers=engineer,
    )
    assert r.status_code == 201 and r.json() == {"name": "sub-02", "voltage_kv": 110.0}
    r = client.put(
        "/inventory/substations/sub-02",
        json={"name": "sub-02", "voltage_kv": 220},
        headers=engineer,
    )
    assert r.status_code == 200
    assert client.get("/inventory/substations/sub-02", headers=engineer).json()["voltage_kv"] == 220
    assert client.delete("/inventory/substations/sub-02", headers=engineer).status_code == 204
    rows = audit(site, "substation", "sub-02")
    assert [(a[0].split("/")[0], a[1]) for a in rows] == [
        ("eng", "create"),
        ("eng", "update"),
        ("eng", "delete"),
    ]
    assert rows[1][2]["voltage_kv"] == 110 and rows[1][3]["voltage_kv"] == 220
    assert rows[2][2]["voltage_kv"] == 220 and rows[2][3] is None


def test_invalid_entries_are_one_line_422s_and_write_nothing(site, client, engineer):
    r = client.put(
        "/inventory/feeders/f-09",
        json={"name": "f-09", "substation": "sub-99"},
        headers=engineer,
    )
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    [err] = r.json()["errors"]
    assert err["msg"] == "feeder f-09: unknown substation 'sub-99'"
    r = client.put(
        "/inventory/areas/a-09",
        json={"name": "a-09", "feeder": "f-01", "transformer_kva": 0},
        headers=engineer,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "transformer_kva"]
    r = client.put(
        "/inventory/areas/a-09",
        json={"name": "a-10", "feeder": "f-01", "transformer_kva": 50},
        headers=engineer,
    )
    assert r.status_code == 422 and "differs from the path's" in r.json()["errors"][0]["msg"]
    assert audit(site, "feeder", "f-09") == [] and audit(site, "area", "a-09") == []


def test_a_delete_that_would_orphan_something_is_a_409(client, engineer):
    r = client.delete("/inventory/substations/sub-01", headers=engineer)
    assert r.status_code == 409
    assert r.json()["detail"] == (
        "substation sub-01 is still referred to by feeders: delete or move those first"
    )
    r = client.delete("/inventory/areas/a-01", headers=engineer)  # jzq-1 is there
    assert r.status_code == 409 and "jzq-1" in r.json()["detail"]
    assert client.delete("/inventory/areas/nowhere", headers=engineer).status_code == 404


def test_a_new_placement_closes_the_one_in_force(site, client, engineer):
    # a-01-c0001: a-01 until 2026-03-01, a-02 since; it moves back to a-01 on 2026-12-01
    # (local midnight, +08:00) with a CT of 5
    r = client.post(
        "/inventory/meters/a-01-c0001/placements",
        json={"role": "customer", "area": "a-01", "ct_ratio": 5, "valid_from": "2026-12-01"},
        headers=engineer,
    )
    assert r.status_code == 200, r.text
    got = [(p["area"], p["ct_ratio"], p["valid_from"], p["valid_to"]) for p in r.json()["data"]]
    assert got == [
        ("a-01", 1.0, None, "2026-02-28T16:00:00Z"),
        ("a-02", 1.0, "2026-02-28T16:00:00Z", "2026-11-30T16:00:00Z"),
        ("a-01", 5.0, "2026-11-30T16:00:00Z", None),
    ]
    actions = [
        (a[0].split("/")[0], a[1])
        for a in audit(site, "metering_point", "a-01-c0001@2026-02-28T16:00:00+00:00")
    ]
    assert actions[-1] == ("eng", "update")
    # a second area total for a-02 at once is refused with the file's message
    r = client.post(
        "/inventory/meters/a-01-c0001/placements",
        json={"role": "area_total", "area": "a-02", "valid_from": "2026-12-05"},
        headers=engineer,
    )
    assert r.status_code == 422
    assert "two area_total points at once in area a-02" in r.json()["errors"][0]["msg"]
    r = client.post(
        "/inventory/meters/a-01-c0001/placements/end",
        json={"at": "2026-12-10T00:00:00+08:00"},
        headers=engineer,
    )
    assert r.json()["data"][-1]["valid_to"] == "2026-12-09T16:00:00Z"


def test_devices_are_written_as_the_files_tables(site, client, engineer):
    r = client.put(
        "/inventory/concentrators/jzq-2",
        json={"name": "jzq-2", "area": "a-02", "meters": ["a-02-c0001", "a-02-c0002"]},
        headers=engineer,
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "devices": ["jzq-2", "a-02-c0001", "a-02-c0002"],
        "created": True,
        "collected": "at its next message",
    }
    meter = client.get("/inventory/devices/a-02-c0001", headers=engineer).json()
    assert meter["protocol"] == "mqtt" and meter["attributes"]["concentrator"] == "jzq-2"
    r = client.put(
        "/inventory/meters/m-9",
        json={"name": "m-9", "protocol": "modbus_tcp", "host": "192.0.2.9", "register_map": "nope"},
        headers=engineer,
    )
    assert r.status_code == 422 and "register map not found" in r.json()["errors"][0]["msg"]
    r = client.put(
        "/inventory/meters/a-01-c0001",  # an MQTT meter: not a Modbus TCP one
        json={
            "name": "a-01-c0001",
            "protocol": "modbus_tcp",
            "host": "h",
            "register_map": "three_phase_meter",
        },
        headers=engineer,
    )
    assert r.status_code == 200  # a meter stays a meter: its protocol may change
    # a placed device is kept; an unplaced one can go
    assert client.delete("/inventory/devices/a-02-total", headers=engineer).status_code == 409
    assert client.delete("/inventory/devices/a-02-c0002", headers=engineer).status_code == 204
    assert [a[1] for a in audit(site, "device", "a-02-c0002")] == ["create", "delete"]


def test_the_file_sync_never_reverts_an_api_edit_and_reports_it(site, client, engineer, caplog):
    r = client.put(
        "/inventory/areas/a-01",
        json={"name": "a-01", "feeder": "f-01", "transformer_kva": 500},
        headers=engineer,
    )
    assert r.status_code == 200
    with caplog.at_level(logging.WARNING), psycopg.connect(site) as conn:
        store_inventory(conn, inventory(TOPOLOGY), actor=FILE_ACTOR)  # the file says 400
    assert client.get("/inventory/areas/a-01", headers=engineer).json()["transformer_kva"] == 500
    [line] = [r.getMessage() for r in caplog.records if "area a-01" in r.getMessage()]
    assert "differs from the database, where it was edited through the API by eng" in line
    assert "DELETE /inventory/overrides/area/a-01" in line
    owned = client.get("/inventory/overrides", headers=engineer).json()
    assert [(o["entity"], o["entity_id"]) for o in owned] == [("area", "a-01")]
    # handed back: the next sync applies the file's
    assert client.delete("/inventory/overrides/area/a-01", headers=engineer).status_code == 204
    with psycopg.connect(site) as conn:
        store_inventory(conn, inventory(TOPOLOGY), actor=FILE_ACTOR)
    assert client.get("/inventory/areas/a-01", headers=engineer).json()["transformer_kva"] == 400


def test_an_api_placement_survives_the_file_sync(site, client, engineer):
    r = client.post(
        "/inventory/meters/a-01-c0001/placements",
        json={"role": "customer", "area": "a-01", "valid_from": "2026-12-01"},
        headers=engineer,
    )
    assert r.status_code == 200
    with psycopg.connect(site) as conn:  # the file lacks the new point: not refused, kept
        store_inventory(conn, inventory(TOPOLOGY), actor=FILE_ACTOR)
    points = client.get("/inventory/meters/a-01-c0001/placements", headers=engineer).json()
    assert points["count"] == 3


def _has_example(content: dict, schemas: dict) -> bool:
    for media in content.values():
        if "example" in media or "examples" in media:
            return True
        schema = media.get("schema", {})
        ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
        model = schemas[ref.rsplit("/", 1)[-1]] if ref else {}
        items = [p.get("items", {}).get("$ref") for p in model.get("properties", {}).values()]
        if "examples" in model or any(
            r and "examples" in schemas[r.rsplit("/", 1)[-1]] for r in items
        ):
            return True
    return False


def test_every_new_operation_documents_examples():
    doc = create_app("postgresql:///unused").openapi()
    schemas = doc["components"]["schemas"]
    missing = []
    for path, item in doc["paths"].items():
        if not path.startswith(("/inventory", "/reads/")):
            continue
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content")
            if body and not _has_example(body, schemas):
                missing.append(f"{method} {path} body")
            ok = op["responses"].get("200", {}).get("content")
            if ok and not _has_example(ok, schemas):
                missing.append(f"{method} {path} 200")
    assert missing == []


def test_the_file_sync_keeps_an_api_edited_device_and_refuses_a_deleted_one(
    site, client, engineer, caplog
):
    # the API moves concentrator jzq-1's meters' area attribute to a-02
    r = client.put(
        "/inventory/concentrators/jzq-1",
        json={"name": "jzq-1", "area": "a-02", "meters": ["a-01-c0001", "a-01-c0002"]},
        headers=engineer,
    )
    assert r.status_code == 200 and r.json()["created"] is False
    with caplog.at_level(logging.WARNING), psycopg.connect(site) as conn:
        store_inventory(conn, inventory(TOPOLOGY), actor=FILE_ACTOR)  # the file says a-01
    got = client.get("/inventory/devices/jzq-1", headers=engineer).json()["attributes"]["area"]
    assert got == "a-02"
    assert any("device jzq-1 differs from the database" in r.getMessage() for r in caplog.records)
    # a device deleted through the API that the file still wires stops the sync, saying so
    r = client.put(
        "/inventory/concentrators/jzq-9",
        json={"name": "jzq-9", "area": "a-02"},
        headers=engineer,
    )
    assert r.status_code == 201
    assert client.delete("/inventory/devices/jzq-9", headers=engineer).status_code == 204
    site_file = inventory(TOPOLOGY + '\n[[concentrator]]\nname = "jzq-9"\narea = "a-02"\n')
    with psycopg.connect(site) as conn, pytest.raises(ConfigError) as exc:
        store_inventory(conn, site_file, actor=FILE_ACTOR)
    assert str(exc.value).startswith("config file: device jzq-9 was deleted through the API by eng")
