"""Bulk inventory over HTTP (real PostgreSQL): JSON export → import, CSV per table, GeoJSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.app import create_app
from gridread.inventory import store_inventory
from gridread.inventory_overrides import FILE_ACTOR
from ingest.schema import migrate
from tests.api_auth import credentials
from tests.topology_site import TOPOLOGY, inventory


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
def empty_url(pg_admin_url: str, storage) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(pg_admin_url), "dbname": name})
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, storage=storage)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_json_export_imports_into_an_empty_database_as_the_same_inventory(
    client, engineer, empty_url
):
    exported = client.get("/inventory/export", headers=engineer).json()
    assert [a["name"] for a in exported["area"]] == ["a-01", "a-02", "d-01"]
    assert len(exported["metering_point"]) == 9
    # the devices go in by their file tables: here the concentrator's MQTT meters and the
    # others as Modbus TCP meters (the export's rows are for reading)
    meters = sorted(
        d["name"] for d in exported["devices"] if d["kind"] == "meter" and d["protocol"] != "mqtt"
    )
    doc = {
        "device": [
            {
                "name": m,
                "protocol": "modbus_tcp",
                "host": "192.0.2.1",
                "register_map": "three_phase_meter",
            }
            for m in meters
        ],
        "concentrator": [
            {
                "name": "jzq-1",
                "area": "a-01",
                "meters": ["a-01-c0001", "a-01-c0002", "a-01-c0002r", "d-01-meter"],
            }
        ],
        **{k: v for k, v in exported.items() if k != "devices"},
    }
    with TestClient(create_app(empty_url), raise_server_exceptions=False) as other:
        eng2 = credentials(empty_url, "metering_engineer", "eng")
        r = other.post("/inventory/import", json=doc, headers=eng2)
        assert r.status_code == 200, r.text
        # 3 Modbus + 1 concentrator + 4 MQTT meters; 1 + 1 + 3 topology entries; 9 points;
        # the assets and the replacement of the site
        again = other.get("/inventory/export", headers=eng2).json()
        assert r.json()["changes"] == 8 + 5 + 9 + len(exported["meter_asset"]) + len(
            exported["replacement"]
        )
        for key in ("substation", "feeder", "area", "metering_point", "meter_asset", "replacement"):
            assert again[key] == exported[key], key
        # the same document again changes nothing
        assert other.post("/inventory/import", json=doc, headers=eng2).json() == {"changes": 0}


def test_an_invalid_import_names_the_entry_and_writes_nothing(site, client, engineer):
    doc = {
        "area": [
            {"name": "a-07", "feeder": "f-01", "transformer_kva": 100},
            {"name": "a-08", "feeder": "f-08", "transformer_kva": 100},
        ]
    }
    r = client.post("/inventory/import", json=doc, headers=engineer)
    assert r.status_code == 422
    assert r.json()["errors"][0]["msg"] == "request body: area 2 (a-08): unknown feeder 'f-08'"
    r = client.post("/inventory/import", json={"areas": []}, headers=engineer)
    assert r.status_code == 422 and "unknown table 'areas'" in r.json()["errors"][0]["msg"]
    names = [a["name"] for a in client.get("/inventory/areas", headers=engineer).json()]
    assert names == ["a-01", "a-02", "d-01"]


def test_csv_export_edit_import(site, client, engineer):
    r = client.get("/inventory/csv/areas", headers=engineer)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == [
        "name,feeder,kind,transformer_kva,lv_voltage_kv",
        "a-01,f-01,public,400.0,0.4",
        "a-02,f-01,public,200.0,0.4",
        "d-01,f-01,dedicated,630.0,0.4",
    ]
    edited = r.text.replace("a-02,f-01,public,200.0", "a-02,f-01,public,250")
    r = client.put(
        "/inventory/csv/areas", content=edited, headers={**engineer, "content-type": "text/csv"}
    )
    assert r.status_code == 200 and r.json() == {"changes": 1}
    assert client.get("/inventory/areas/a-02", headers=engineer).json()["transformer_kva"] == 250
    # only the entry the import changed is the database's now; the others stay the file's
    owned = client.get("/inventory/overrides", headers=engineer).json()
    assert [(o["entity"], o["entity_id"]) for o in owned] == [("area", "a-02")]
    bad = "name,feeder,transformer_kva\na-03,f-01,100\na-04,f-01,-1\n"
    r = client.put("/inventory/csv/areas", content=bad, headers=engineer)
    assert r.status_code == 422
    assert r.json()["errors"][0]["msg"].startswith("areas.csv line 3: area a-04: transformer_kva")
    assert client.get("/inventory/areas/a-03", headers=engineer).status_code == 404


def test_geojson_of_located_areas_and_meters(site, client, engineer):
    assert client.get("/inventory/geojson", headers=engineer).json() == {
        "type": "FeatureCollection",
        "features": [],
    }
    loc = {"longitude": 121.5, "latitude": 31.25}
    assert (
        client.put("/inventory/areas/a-02/location", json=loc, headers=engineer).status_code == 200
    )
    r = client.put(
        "/inventory/devices/a-02-total/location",
        json={"longitude": 121.501, "latitude": 31.2501},
        headers=engineer,
    )
    assert r.status_code == 200
    r = client.put(
        "/inventory/devices/a-02-total/location",
        json={"longitude": 121.5, "latitude": None},
        headers=engineer,
    )
    assert r.status_code == 422
    r = client.put(
        "/inventory/devices/a-02-total/location",
        json={"longitude": 181, "latitude": 0},
        headers=engineer,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "longitude"]
    r = client.get("/inventory/geojson", headers=engineer)
    assert r.headers["content-type"] == "application/geo+json"
    assert r.json()["features"] == [
        {
            "type": "Feature",
            "id": "area/a-02",
            "geometry": {"type": "Point", "coordinates": [121.5, 31.25]},
            "properties": {
                "kind": "area",
                "name": "a-02",
                "feeder": "f-01",
                "area_kind": "public",
                "transformer_kva": 200.0,
            },
        },
        {
            "type": "Feature",
            "id": "meter/a-02-total",
            "geometry": {"type": "Point", "coordinates": [121.501, 31.2501]},
            "properties": {
                "kind": "meter",
                "name": "a-02-total",
                "protocol": "dlt645",
                "role": "area_total",
                "area": "a-02",
                "feeder": "f-01",
                "multiplier": 40.0,
            },
        },
    ]
    assert client.get("/inventory/geojson?feeder=f-02", headers=engineer).json()["features"] == []
