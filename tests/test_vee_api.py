"""The billing export and the edit endpoint over what the VEE job stored (the world of
tests/test_vee_job.py: m1 complete after estimation, m2's day 1 failing the sum-check).

m1, local day 2026-11-10: frozen 100 → 196: 96 kWh (multiplier 1, not placed); TOU a
quarter each: 25 → 49 = 24 kWh each; reactive 3.8.0 registers 50 + 0.3125·k on day 0 (96 ×
0.3125 = 30 kvarh; boundary 20 not read: estimated linearly) and + 0.25 a step on day 1
(24 kvarh); power factor 96/√(96² + 30²) = 96/100.578 = 0.95448; demand: every interval
1 kWh → 4 kW, first at 00:00; estimated values went in (the gap, the SUSPECT read).
2026-11-11: 196 → 292, pf 96/√(96² + 24²) = 0.97014; nothing estimated that day.
m2 has no reactive reads at all.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.vee_job import run_vee
from api.app import create_app
from tests.api_auth import credentials
from tests.lineloss_fixture import device
from tests.test_vee_job import DAY, NOW, POLICY, D, Q, meter, put

DAYS = {"start": "2026-11-10", "end": "2026-11-12"}


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        m1 = meter(conn, "m1", [100, 196, 292])
        meter(conn, "m2", [100, 196, 300])
        for k in range(193):
            if k != 20:
                q = 50 + 0.3125 * k if k <= 96 else 80 + 0.25 * (k - 96)
                put(conn, m1, "3.8.0", DAY + k * Q, q)
        run_vee(conn, POLICY, NOW)
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "billing", name="li"),
    ) as c:
        c.db_url = migrated_url  # for credentials of other roles
        yield c


def test_export_json(client):
    r = client.get("/billing/export", params=DAYS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"rows": 4, "complete": 2, "incomplete": 2}
    rows = {(x["meter"], x["period_start"][:10]): x for x in body["data"]}
    a = rows["m1", "2026-11-09"]  # 2026-11-10 local starts 16:00 UTC the day before
    assert (a["register_start"], a["register_end"], a["energy_kwh"]) == (100, 196, 96)
    assert [a[f"{t}_kwh"] for t in ("sharp", "peak", "flat", "valley")] == [24] * 4
    assert a["reactive_kvarh"] == pytest.approx(30)
    assert a["power_factor"] == pytest.approx(96 / math.hypot(96, 30))
    assert a["demand_kw"] == pytest.approx(4) and a["demand_at"].startswith("2026-11-09T16:00")
    assert a["estimated"] and a["unvalidated"] == []
    b = rows["m1", "2026-11-10"]
    assert b["reactive_kvarh"] == pytest.approx(24)
    assert b["power_factor"] == pytest.approx(96 / math.hypot(96, 24)) and not b["estimated"]
    c = rows["m2", "2026-11-10"]  # its frozen 300 fails the sum-check: nothing of day 1
    assert c["register_end"] is None and c["energy_kwh"] is None and c["demand_kw"] is None
    assert c["unvalidated"] == [
        "register_end",
        "tou",
        "reactive (0 of 96 intervals validated)",
        "demand (0 of 96 intervals validated)",
    ]


def test_export_csv_month_and_bad_input(client):
    r = client.get("/billing/export", params={**DAYS, "format": "csv", "meter": "m1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["energy_kwh"] for x in rows] == ["96.0", "96.0"]
    assert rows[0]["unvalidated"] == ""
    # a month without frozen registers at its start: reported, not invented
    r = client.get("/billing/export", params={"start": "2026-11-01", "end": "2026-12-01",
                                              "period": "month", "meter": "m1"})  # fmt: skip
    (row,) = r.json()["data"]
    assert row["energy_kwh"] is None and "register_start" in row["unvalidated"]
    for bad in ({"start": "2026-11-12", "end": "2026-11-10"},
                {"start": "2026-11-02", "end": "2026-12-01", "period": "month"},
                {"start": "2026-11-10", "end": "2028-11-10"}):  # fmt: skip
        assert client.get("/billing/export", params=bad).status_code == 422


def test_edit_endpoint(client):
    ts = (DAY + 2 * D).isoformat()
    body = {"quantity": "1.8.0*d", "ts": ts, "value": 292, "reason": "photo"}
    viewer = credentials(client.db_url, "viewer")
    assert client.post("/billing/reads/m2/edit", json=body, headers=viewer).status_code == 403
    r = client.post("/billing/reads/m2/edit", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["method"] == "edited"
    # the editor is the caller (the key's owner "li"), not anything the body says
    assert r.json()["edited_by"].startswith("li/key:")
    with psycopg.connect(client.db_url) as conn:
        (actor,) = conn.execute(
            "SELECT actor FROM audit_log WHERE entity = 'validated_read' ORDER BY id DESC"
        ).fetchone()
    assert actor == r.json()["edited_by"]
    until = (DAY + 3 * D).isoformat()
    params = {"start": ts, "end": until, "quantity": "1.8.0*d", "history": True}
    got = client.get("/billing/reads/m2", params=params)
    assert [(x["version"], x["value"], x["current"]) for x in got.json()] == [
        (1, 300, False),
        (2, 292, True),
    ]
    assert "sum_check" not in got.json()[1]["rules"]  # the frozen itself was not failing
    row = client.get("/billing/export", params={**DAYS, "meter": "m2"}).json()["data"][1]
    assert row["register_end"] == 292 and row["energy_kwh"] == 96 and row["estimated"]
    assert client.post("/billing/reads/m2/edit", json={**body, "reason": ""}).status_code == 422
    assert client.post("/billing/reads/nope/edit", json=body).status_code == 404
    r = client.post("/billing/reads/m2/edit", json={**body, "ts": DAY.isoformat() + "x"})
    assert r.status_code == 422
    gone = {**body, "ts": (DAY + 9 * D).isoformat()}
    assert client.post("/billing/reads/m2/edit", json=gone).status_code == 404


def test_register_rollover(migrated_url):
    # m3's register (XXXXXX.XX, modulus 1,000,000) is (999,950 + k) mod 1,000,000 at
    # boundary k: it wraps at k = 50. Frozen 999,950 → 46 → 142; TOU a quarter of the
    # unwrapped total each (they do not wrap): Σ TOU ≡ total (mod 1,000,000).
    # Day 0: 46 − 999,950 < 0 → the energy is the validated intervals' Σ = 96 kWh.
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        dev = device(conn, "m3")
        for k in range(193):
            put(conn, dev, "1.8.0", DAY + k * Q, (999_950 + k) % 1_000_000)
        for d, f in enumerate([999_950, 1_000_046, 1_000_142]):
            put(conn, dev, "1.8.0*d", DAY + d * D, f % 1_000_000)
            for t in range(1, 5):
                put(conn, dev, f"1.8.{t}*d", DAY + d * D, f / 4)
        run_vee(conn, POLICY, NOW)
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "billing"),
    ) as client:
        rows = client.get("/billing/export", params=DAYS).json()["data"]
    assert [(r["register_start"], r["register_end"]) for r in rows] == [
        (999_950, 46),
        (46, 142),
    ]
    assert [r["energy_kwh"] for r in rows] == [pytest.approx(96)] * 2
    assert rows[0]["sharp_kwh"] == 24 and rows[0]["unvalidated"][0].startswith("reactive")
