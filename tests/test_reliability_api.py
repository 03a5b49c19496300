"""The reliability API over what the job stored (the site of tests/test_reliability_job.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from analytics.reliability_job import run_reliability
from api.app import create_app
from tests.api_auth import credentials
from tests.test_reliability_job import NOW, POLICY, local, site  # noqa: F401 (fixture)


@pytest.fixture
def client(site, migrated_url: str) -> Iterator[TestClient]:  # noqa: F811
    conn, _ = site
    run_reliability(conn, POLICY, NOW)
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "viewer"),
    ) as c:
        yield c


WINDOW = {"start": "2026-11-01T00:00:00+08:00", "end": "2026-12-01T00:00:00+08:00"}


def test_interruptions_listed_and_filtered(client):
    r = client.get("/reliability/interruptions", params=WINDOW)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 5
    first = body["data"][0]
    assert (first["area"], first["feeder"], first["customers"]) == ("a-01", "f-01", 4)
    assert first["customer_minutes"] == 240.0 and first["kind"] == "unplanned"
    opened = [i for i in body["data"] if i["end"] is None]
    assert [(i["area"], i["open"]) for i in opened] == [("a-01", 1)]
    planned = client.get("/reliability/interruptions", params={**WINDOW, "kind": "planned"})
    assert [i["area"] for i in planned.json()["data"]] == ["a-01", "d-01"]
    mom = client.get("/reliability/interruptions", params={**WINDOW, "momentary": True})
    assert [(i["area"], i["customer_minutes"]) for i in mom.json()["data"]] == [("d-01", 2.0)]


def test_indices_per_level_and_period(client):
    r = client.get("/reliability/indices", params={"level": "system", **WINDOW})
    assert r.status_code == 200
    [nov] = r.json()["data"]
    # 840 customer minutes over 5 customers; 9 sustained; one momentary; one open
    assert nov["saidi"] == pytest.approx(168.0) and nov["saifi"] == pytest.approx(1.8)
    assert (nov["momentary"], nov["open"]) == (1, 1)
    areas = client.get("/reliability/indices", params={"level": "area", **WINDOW}).json()
    assert {a["name"]: a["saidi"] for a in areas["data"]} == {"a-01": 180.0, "d-01": 120.0}
    year = client.get(
        "/reliability/indices",
        params={"level": "feeder", "period": "year", "name": "f-01", "end": NOW.isoformat()},
    ).json()
    assert [y["saidi"] for y in year["data"]] == [pytest.approx(168.0)]


def test_notices_and_bad_input(client):
    r = client.get("/reliability/notices", params=WINDOW)
    [n] = r.json()["data"]
    assert (n["scope"], n["name"], n["kind"]) == ("feeder", "f-01", "planned")
    assert n["start"].startswith(local(20, 8).isoformat()[:19])
    assert client.get("/reliability/indices", params={"level": "town"}).status_code == 422
    bad = client.get(
        "/reliability/interruptions", params={"start": "2026-12-01", "end": "2026-11-01"}
    )
    assert bad.status_code == 422
