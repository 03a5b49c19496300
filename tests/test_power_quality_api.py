"""The power-quality API over the results the job stored in a real PostgreSQL (the world of
tests/test_power_quality_job.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.power_quality_job import run_power_quality
from analytics.store import AnalyticsStore
from api.app import create_app
from tests.api_auth import credentials
from tests.lineloss_fixture import DAY
from tests.test_power_quality_job import NOW, POLICY, seed

WINDOW = {
    "start": (DAY - timedelta(days=1)).isoformat(),
    "end": (DAY + timedelta(days=1)).isoformat(),
}


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        seed(conn)
        run_power_quality(AnalyticsStore(conn), POLICY, NOW)
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "viewer"),
    ) as c:
        yield c


def test_rates_per_monitor_meter_and_area(client):
    r = client.get("/power-quality/voltage", params={"kind": "monitor", **WINDOW})
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in r.json()["data"]}
    assert rows["vm-1"]["rate"] == pytest.approx((1 - 50 / 1430) * 100)
    assert rows["vm-1"]["missing_s"] == 600
    r = client.get(
        "/power-quality/voltage", params={"kind": "meter", "name": "a-01-total", **WINDOW}
    )
    assert [(row["phase"], row["rate"]) for row in r.json()["data"]] == [
        ("A", 100),
        ("B", 100),
        ("C", pytest.approx((1 - 92 / 96) * 100)),
    ]
    months = {"start": (DAY - timedelta(days=40)).isoformat(), "end": WINDOW["end"]}
    r = client.get("/power-quality/voltage", params={"kind": "area", "period": "month", **months})
    (area,) = r.json()["data"]
    assert area["name"] == "a-01" and area["days"] == 1
    assert area["rate"] == pytest.approx((1 - 96 / (94 + 3 * 96)) * 100)


def test_composite_unbalance_and_flags(client):
    r = client.get("/power-quality/composite", params=WINDOW)
    assert r.status_code == 200, r.text
    (day,) = r.json()
    a, d = (1 - 50 / 1430) * 100, (1 - 60 / 1440) * 100
    assert day["rate"] == pytest.approx((0.5 * a + d / 6) / (0.5 + 1 / 6))
    assert [c["name"] for c in day["classes"]] == ["A", "B", "C", "D"]
    r = client.get("/power-quality/unbalance", params={"quantity": "voltage", **WINDOW})
    (u,) = r.json()["data"]
    assert (u["name"], u["n_values"], u["within_normal"], u["beyond_short"]) == (
        "a-01-total",
        96,
        4,
        92,
    )
    r = client.get(
        "/power-quality/monitor-flags",
        params={"first": "2026-11-10", "last": "2026-11-10", "flagged": "true"},
    )
    assert [(f["name"], f["reasons"]) for f in r.json()["data"]] == [("vm-2", ["rate"])]
    bad = client.get("/power-quality/voltage", params={"kind": "nope"})
    assert bad.status_code == 422
