"""The reads endpoints over real data (real PostgreSQL; the VEE job's own validated reads):
keyset pages walking a day with no duplicates or gaps, the same rows streamed as NDJSON and
CSV, hand-computed 15-min buckets, and refused cursors.

The data: tests.test_vee_job's meters m1 and m2 — two local days (Asia/Shanghai) from DAY of
15-min ``1.8.0`` registers, 100 + k at boundary k, boundaries 10, 11, 12 missing and 50 read
as −4e23 — validated by the real VEE job; and m1's voltage ``32.7.0`` each minute of DAY's
first half hour, 230 + minute.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.vee_job import run_vee
from api.app import create_app
from tests.api_auth import credentials
from tests.test_vee_job import DAY, NOW, POLICY, meter, put

WINDOW = {"start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat()}


@pytest.fixture
def url(migrated_url: str) -> str:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        m1 = meter(conn, "m1", [100, 196, 292])
        meter(conn, "m2", [100, 196, 300])
        for minute in range(30):
            put(conn, m1, "32.7.0", DAY + timedelta(minutes=minute), 230.0 + minute)
        run_vee(conn, POLICY, NOW)
    return migrated_url


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with TestClient(create_app(url, timezone="Asia/Shanghai"), raise_server_exceptions=False) as c:
        c.headers.update(credentials(url, "viewer"))
        yield c


def walk(client, path: str, params: dict, limit: int) -> tuple[list[dict], int]:
    """Every page of a query; returns the rows and the number of pages."""
    rows, cursor, pages = [], None, 0
    while True:
        page = client.get(
            path, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["count"] == len(body["data"]) <= limit
        rows += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, pages


def stored(url: str, sql: str, params: dict) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_raw_pages_walk_a_day_with_no_duplicates_or_gaps(url, client):
    rows, pages = walk(client, "/reads/raw", {"quantity": "1.8.0", **WINDOW}, limit=7)
    truth = stored(
        url,
        "SELECT d.name, r.ts, r.value FROM readings r JOIN devices d ON d.id = r.device_id"
        " WHERE quantity = '1.8.0' AND ts >= %(start)s AND ts < %(end)s ORDER BY d.id, ts",
        WINDOW,
    )
    # per meter: boundaries 0..95 of the day less 10, 11, 12 → 93; two meters → 186 rows
    assert len(truth) == 186
    got = [(r["device"], r["ts"], r["value"]) for r in rows]
    assert got == [
        (n, ts.astimezone(UTC).isoformat().replace("+00:00", "Z"), v) for n, ts, v in truth
    ]
    assert len(set((r["device"], r["ts"]) for r in rows)) == 186
    assert pages == 27  # ⌈186 / 7⌉; the last page is short, no empty page after it
    one, _ = walk(client, "/reads/raw", {"quantity": "1.8.0", "device": "m2", **WINDOW}, 50)
    assert {r["device"] for r in one} == {"m2"} and len(one) == 93


def test_interval_buckets_by_hand_and_paged(client):
    rows, pages = walk(client, "/reads/interval", {"quantity": "32.7.0", **WINDOW}, limit=1)
    # minutes 0..14 → 230..244: min 230, max 244, avg (230 + 244) / 2 = 237, first 230,
    # last 244, delta 14; minutes 15..29 → 245..259: avg 252
    assert pages == 2
    a, b = rows
    assert (a["count"], a["min"], a["avg"], a["max"], a["first"], a["last"], a["delta"]) == (
        15,
        230,
        237,
        244,
        230,
        244,
        14,
    )
    assert (b["count"], b["min"], b["avg"], b["max"]) == (15, 245, 252, 259)
    assert b["bucket"] == (DAY + timedelta(minutes=15)).isoformat().replace("+00:00", "Z")
    # a register: one reading per 15-min bucket, so first = last and delta 0; 93 per meter
    regs, _ = walk(client, "/reads/interval", {"quantity": "1.8.0", **WINDOW}, limit=40)
    assert len(regs) == 186 and {r["count"] for r in regs} == {1}
    assert len({(r["device"], r["bucket"]) for r in regs}) == 186


def test_validated_pages_are_the_current_vee_rows(url, client):
    rows, _ = walk(client, "/reads/validated", {"quantity": "1.8.0", **WINDOW}, limit=25)
    truth = stored(
        url,
        "SELECT d.name, v.value, v.method FROM validated_reads v JOIN devices d"
        " ON d.id = v.device_id WHERE current AND quantity = '1.8.0' AND ts >= %(start)s"
        " AND ts < %(end)s ORDER BY d.id, ts",
        WINDOW,
    )
    assert len(truth) == 192  # 96 intervals of the day per meter, estimated ones included
    assert [(r["device"], r["value"], r["method"]) for r in rows] == [tuple(t) for t in truth]
    m1 = [r for r in rows if r["device"] == "m1"]
    # 1 kWh every interval; the intervals touching the missing boundaries 10..12 (9..12)
    # and the suspect boundary 50 (49, 50) are estimated
    assert [r["value"] for r in m1] == [1.0] * 96
    assert [i for i, r in enumerate(m1) if r["method"] == "estimated"] == [9, 10, 11, 12, 49, 50]


@pytest.mark.parametrize("kind", ["raw", "interval", "validated"])
def test_streams_hold_the_same_rows_as_the_pages(client, kind):
    params = {"quantity": "1.8.0", **WINDOW}
    paged, _ = walk(client, f"/reads/{kind}", params, limit=1000)
    r = client.get(f"/reads/{kind}", params={**params, "format": "ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    norm = lambda v: v.replace("+00:00", "Z") if isinstance(v, str) else v  # noqa: E731
    assert [{k: norm(v) for k, v in row.items()} for row in lines] == paged
    r = client.get(f"/reads/{kind}", params={**params, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == len(paged) and list(table[0]) == list(paged[0])
    assert [t["device"] for t in table] == [p["device"] for p in paged]


def test_a_stream_resumes_from_a_pages_cursor(client):
    params = {"quantity": "1.8.0", **WINDOW}
    first = client.get("/reads/raw", params={**params, "limit": 100}).json()
    rest = client.get(
        "/reads/raw", params={**params, "format": "ndjson", "cursor": first["next_cursor"]}
    )
    assert len(first["data"]) + len(rest.text.splitlines()) == 186


def test_bad_cursors_devices_and_quantities_are_refused(client):
    page = client.get("/reads/raw", params={"quantity": "1.8.0", **WINDOW, "limit": 5}).json()
    r = client.get("/reads/validated", params={"quantity": "1.8.0", "cursor": page["next_cursor"]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["msg"] == (
        "a cursor of raw reads of 1.8.0, not of validated reads of 1.8.0"
    )
    r = client.get("/reads/raw", params={"quantity": "1.8.0", "cursor": "bm9wZQ"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "cursor"]
    r = client.get("/reads/raw", params={"quantity": "1.8.0", "device": "m9"})
    assert r.status_code == 404 and r.json()["detail"] == "no device named 'm9'"
    r = client.get("/reads/interval", params={"quantity": "9.9.9"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "quantity"]
    r = client.get("/reads/raw", params={"quantity": "1.8.0"}, headers={"X-API-Key": "x"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == "Bearer"


def test_rows_stored_during_a_walk_behind_the_cursor_are_not_seen_ahead_are(url, client):
    params = {"quantity": "1.8.0", **WINDOW, "limit": 50}
    first = client.get("/reads/raw", params=params).json()
    assert {r["device"] for r in first["data"]} == {"m1"}  # m1's first 50 rows: k 0..9, 13..52
    with psycopg.connect(url, autocommit=True) as conn:
        ids = dict(conn.execute("SELECT name, id FROM devices").fetchall())
        put(conn, ids["m1"], "1.8.0", DAY + timedelta(minutes=15 * 10), 110.0)  # behind
        put(conn, ids["m2"], "1.8.0", DAY + timedelta(minutes=15 * 10), 110.0)  # ahead
    rows, cursor = list(first["data"]), first["next_cursor"]
    while cursor:
        page = client.get("/reads/raw", params={**params, "cursor": cursor}).json()
        rows += page["data"]
        cursor = page["next_cursor"]
    keys = [(r["device"], r["ts"]) for r in rows]
    assert len(keys) == len(set(keys)) == 186 + 1
    at10 = (DAY + timedelta(minutes=150)).isoformat().replace("+00:00", "Z")
    assert ("m2", at10) in keys and ("m1", at10) not in keys
