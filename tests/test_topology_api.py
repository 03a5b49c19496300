"""The topology API over a stored site (real PostgreSQL, the app under TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gridread.inventory import store_inventory
from tests.api_auth import credentials
from tests.topology_site import TOPOLOGY, inventory

SITE_TZ = ZoneInfo("Asia/Shanghai")  # create_app's default: the site's local days


def _assets(today) -> str:
    """Assets due relative to the site's today: 10 days overdue, in 30 days, in 200 days."""
    rows = [("a-01-total", -10), ("f-01-head", 30), ("d-01-meter", 200)]
    return "".join(
        f'\n[[meter_asset]]\nmeter = "{m}"\nmodel = "DTZ"\naccuracy_class = "0.5S"\n'
        f"next_verification = {today + timedelta(days=d)}\n"
        for m, d in rows
    )


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    today = datetime.now(SITE_TZ).date()
    # the site's own assets (a-02-total due 2026-12-01, a-01-c0001 in 2032) moved out of
    # the way: only the ones relative to today are listed
    topo = TOPOLOGY.replace("next_verification = 2026-12-01", "").replace(
        "next_verification = 2032-02-20", ""
    )
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(topo + _assets(today)), actor="test")
    with TestClient(
        create_app(migrated_url),
        headers=credentials(migrated_url, "viewer"),
        raise_server_exceptions=False,
    ) as c:
        yield c


def test_substations_feeders_and_areas(client):
    assert client.get("/topology/substations").json() == [
        {"name": "sub-01", "voltage_kv": 35.0, "feeders": 1}
    ]
    assert client.get("/topology/feeders").json() == [
        {
            "name": "f-01",
            "substation": "sub-01",
            "voltage_kv": 10.0,
            "head_meter": "f-01-head",
            "areas": 3,
        }
    ]
    got = [
        (a["name"], a["kind"], a["transformer_kva"], a["total_meter"])
        for a in client.get("/topology/areas").json()
    ]
    assert got == [
        ("a-01", "public", 400.0, "a-01-total"),
        ("a-02", "public", 200.0, "a-02-total"),
        ("d-01", "dedicated", 630.0, "d-01-meter"),
    ]


@pytest.mark.parametrize(
    "at, members",
    [
        # before March: the total meter at CT 80, c0001 on phase B, c0002 since January
        (
            "2026-02-01T00:00:00+08:00",
            [("a-01-total", 80.0), ("a-01-c0001", 1.0), ("a-01-c0002", 1.0)],
        ),
        # from March (local midnight): CT 120, c0001 moved to a-02
        ("2026-03-01T00:00:00+08:00", [("a-01-total", 120.0), ("a-01-c0002", 1.0)]),
        # an instant before: still February's
        (
            "2026-02-28T23:59:59+08:00",
            [("a-01-total", 80.0), ("a-01-c0001", 1.0), ("a-01-c0002", 1.0)],
        ),
        # the replacement at 10:30 local: the new meter from that instant
        ("2026-11-10T10:30:00+08:00", [("a-01-total", 120.0), ("a-01-c0002r", 1.0)]),
        ("2026-11-10T02:29:59Z", [("a-01-total", 120.0), ("a-01-c0002", 1.0)]),
    ],
)
def test_an_areas_members_at_an_instant(client, at, members):
    r = client.get("/topology/areas/a-01/members", params={"at": at})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(m["meter"], m["multiplier"]) for m in body["data"]] == members
    assert body["count"] == len(members)


def test_member_fields_and_the_dedicated_area(client):
    r = client.get("/topology/areas/d-01/members", params={"at": "2026-05-01T00:00:00Z"})
    [m] = r.json()["data"]
    assert m == {
        "meter": "d-01-meter",
        "role": "area_total",
        "area": "d-01",
        "feeder": "f-01",
        "phase": "ABC",
        "ct_ratio": 50.0,
        "pt_ratio": 100.0,
        "multiplier": 5000.0,
        "customer_class": "industrial",
        "tariff": None,
        "location": None,
        "valid_from": None,  # −infinity
        "valid_to": None,
    }


def test_a_meters_history(client):
    r = client.get("/topology/meters/a-01-c0001/history")
    assert r.status_code == 200, r.text
    got = [(p["area"], p["phase"], p["valid_from"], p["valid_to"]) for p in r.json()["data"]]
    assert got == [
        ("a-01", "B", None, "2026-02-28T16:00:00Z"),
        ("a-02", "A", "2026-02-28T16:00:00Z", None),
    ]


def test_verification_due_within_the_window_sorted_by_date(client):
    today = datetime.now(SITE_TZ).date()
    due = client.get("/meters/verification-due").json()  # default 90 days
    assert [(d["meter"], d["next_verification"], d["overdue"]) for d in due] == [
        ("a-01-total", str(today - timedelta(days=10)), True),
        ("f-01-head", str(today + timedelta(days=30)), False),
    ]
    year = client.get("/meters/verification-due", params={"within_days": 365}).json()
    assert [d["meter"] for d in year] == ["a-01-total", "f-01-head", "d-01-meter"]
    past = client.get("/meters/verification-due", params={"within_days": 0}).json()
    assert [d["meter"] for d in past] == ["a-01-total"]


@pytest.mark.parametrize("url", ["/topology/areas/nope/members", "/topology/meters/nope/history"])
def test_unknown_names_are_declared_404s(client, url):
    r = client.get(url)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    path = url.replace("nope", "{name}")
    assert "404" in client.get("/openapi.json").json()["paths"][path]["get"]["responses"]


@pytest.mark.parametrize(
    "url, field",
    [
        ("/topology/areas/a-01/members?at=0", "at"),
        ("/topology/areas/a-01/members?at=yesterday", "at"),
        ("/meters/verification-due?within_days=-1", "within_days"),
        ("/topology/areas/a%0001/members", "name"),
    ],
)
def test_bad_parameters_are_422(client, url, field):
    r = client.get(url)
    assert r.status_code == 422, r.text
    assert any(e["loc"][-1] == field for e in r.json()["detail"])


@pytest.mark.parametrize(
    "at, expected",
    [
        ("0001-01-01T00:00:00+14:00", ["a-01-total", "a-01-c0001"]),  # the open-ended starts
        ("9999-12-31T23:59:59-14:00", ["a-01-total", "a-01-c0002r"]),  # the open ends
        ("2026-02-28T16:00:00", ["a-01-total", "a-01-c0002"]),  # March in Shanghai
    ],
)
def test_the_calendars_ends_are_not_a_500(client, at, expected):
    # an instant before year 1 or after 9999 in UTC, and one without a zone (taken as UTC)
    r = client.get("/topology/areas/a-01/members", params={"at": at})
    assert r.status_code == 200, r.text
    assert [m["meter"] for m in r.json()["data"]] == expected
