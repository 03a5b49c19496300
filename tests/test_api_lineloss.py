"""The line-loss API over the results the job stored in a real PostgreSQL (the world of
tests/test_lineloss_job.py, plus two areas for the ranking)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.jobs import run_lineloss
from analytics.store import AnalyticsStore
from api.app import create_app
from tests.api_auth import credentials
from tests.lineloss_fixture import DAY, Q, device, place, registers
from tests.test_lineloss_job import NOW, POLICY, world


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        ids = world(conn)
        # a-02: supply 10 per interval, its customer 5: loss 5, rate 50 % (high)
        # a-03: its customer never read: not computable, coverage (4 + 0) / (4 + 4) = 0.5
        for area, customer in (("a-02", [0, 5, 10, 15, 20]), ("a-03", None)):
            (aid,) = conn.execute(
                "INSERT INTO areas (name, feeder_id, transformer_kva) VALUES (%s, %s, 100)"
                " RETURNING id",
                (area, ids["f-01"]),
            ).fetchone()
            total, cust = device(conn, f"{area}-total"), device(conn, f"{area}-c")
            place(conn, total, "area_total", area=aid, valid_from=DAY)
            place(conn, cust, "customer", area=aid, valid_from=DAY)
            registers(conn, total, [0, 10, 20, 30, 40])
            if customer:
                registers(conn, cust, customer)
        run_lineloss(AnalyticsStore(conn), POLICY, NOW)
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "viewer"),
    ) as c:
        yield c


def test_lineloss_rows_of_a_level_and_period(client):
    r = client.get(
        "/lineloss",
        params={
            "level": "area",
            "period": "15min",
            "name": "a-01",
            "start": DAY.isoformat(),
            "end": (DAY + 4 * Q).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 4
    assert [row["loss"] for row in body["data"]] == [4, 8, 2, -1]
    assert [row["status"] for row in body["data"]] == ["normal", "high", "normal", "negative"]
    assert set(body["data"][0]) == {
        "level", "name", "period", "start", "supply", "sales", "loss", "rate", "coverage",
        "status",
    }  # fmt: skip
    volt = client.get(
        "/lineloss", params={"level": "voltage", "period": "day", "end": NOW.isoformat()}
    ).json()
    assert {row["name"] for row in volt["data"]} == {"10 kV", "0.4 kV"}


def test_ranking_puts_not_computable_apart(client):
    r = client.get("/lineloss/ranking", params={"day": "2026-11-10"})
    assert r.status_code == 200, r.text
    body = r.json()
    # a-02: 20 / 40 = 50 %; a-01: 13 / 160 = 8.125 %
    assert [(a["name"], a["rate"]) for a in body["ranked"]] == [("a-02", 50.0), ("a-01", 8.125)]
    assert [(a["name"], a["rate"], a["coverage"]) for a in body["not_computable"]] == [
        ("a-03", None, 0.5)
    ]
    assert (
        client.get("/lineloss/ranking", params={"day": "2026-11-10", "limit": 1}).json()["ranked"]
        == body["ranked"][:1]
    )
    month = client.get("/lineloss/ranking", params={"day": "2026-11-10", "period": "month"})
    assert [a["name"] for a in month.json()["ranked"]] == ["a-02", "a-01"]


def test_contributions_of_an_area(client):
    r = client.get("/lineloss/areas/a-01/contributions", params={"day": "2026-11-10"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"]["loss"] == 13
    members = {m["meter"]: m for m in body["members"]}
    assert set(members) == {"a-01-total", "c1", "c2"}
    # c1: 20+25+20+15 = 80 of sales 147; c2: 16+17+18+16 = 67; the day has 96 intervals
    assert members["c1"]["energy"] == 80 and members["c2"]["energy"] == 67
    assert members["c1"]["share_pct"] == pytest.approx(80 / 147 * 100)
    assert members["c1"]["intervals_present"] == 4
    assert members["c1"]["intervals_expected"] == 96
    assert members["a-01-total"] | {"energy": None} == {
        "meter": "a-01-total", "role": "area_total", "multiplier": 80.0, "energy": None,
        "intervals_present": 4, "intervals_expected": 96, "share_pct": None,
    }  # fmt: skip
    assert members["a-01-total"]["energy"] == 160


def test_unknown_area_is_404_and_bad_parameters_422(client):
    r = client.get("/lineloss/areas/nowhere/contributions", params={"day": "2026-11-10"})
    assert r.status_code == 404
    assert "nowhere" in r.json()["detail"]
    assert client.get("/lineloss", params={"level": "substation"}).status_code == 422
    assert client.get("/lineloss/ranking", params={"day": "10/11/2026"}).status_code == 422
    assert client.get("/lineloss/ranking", params={"limit": 0}).status_code == 422
