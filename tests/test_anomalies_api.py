"""The worklist API over the cases the job stored (the site of tests/test_anomalies_job.py):
ranking per area, a case with evidence and history, the status workflow and its refusals,
the outcomes per rule."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.anomaly_job import run_anomalies
from analytics.store import AnalyticsStore
from api.app import create_app
from tests.api_auth import credentials
from tests.test_anomalies_job import NOW, POLICY, site


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        site(conn)
        assert run_anomalies(AnalyticsStore(conn), POLICY, NOW) == 2
    with TestClient(
        create_app(migrated_url, timezone="Asia/Shanghai"),
        headers=credentials(migrated_url, "inspector", name="insp"),
    ) as c:
        c.db_url = migrated_url
        yield c


def test_worklist_ranked_per_area_with_evidence(client):
    r = client.get("/worklist", params={"area": "a-01"})
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 2
    assert [(c["meter"], c["kind"], c["rank"]) for c in body["data"]] == [
        ("c2", "reverse_wiring", 1),
        ("c1", "stopped", 2),
    ]
    assert "reverse_energy" in body["data"][0]["evidence"]
    assert client.get("/worklist", params={"area": "nowhere"}).json()["count"] == 0
    assert client.get("/worklist", params={"kind": "stopped"}).json()["count"] == 1


def test_status_workflow_and_refusals(client):
    case = client.get("/worklist", params={"kind": "stopped"}).json()["data"][0]
    url = f"/worklist/cases/{case['id']}"
    status = f"{url}/status"
    # open → confirmed skips the inspection: refused
    r = client.patch(status, json={"status": "confirmed"})
    assert r.status_code == 409 and "allowed assigned" in r.json()["detail"]
    # assigned without an assignee: refused
    assert client.patch(status, json={"status": "assigned"}).status_code == 422
    assert client.patch(status, json={"status": "nonsense"}).status_code == 422
    r = client.patch(status, json={"status": "assigned", "assignee": "li.wei", "note": "visit Tue"})
    assert r.status_code == 200 and r.json()["assignee"] == "li.wei"
    r = client.post(f"{url}/transitions", json={"status": "confirmed", "note": "register jammed"})
    assert r.status_code == 201
    done = r.json()
    assert done["status"] == "confirmed" and done["closed_at"] is not None
    assert [(h["from_status"], h["to_status"]) for h in done["history"]] == [
        (None, "open"),
        ("open", "assigned"),
        ("assigned", "confirmed"),
    ]
    # each transition audited as the caller, with the state before and after
    with psycopg.connect(client.db_url) as conn:
        audit = conn.execute(
            "SELECT actor, before->>'status', after->>'status' FROM audit_log"
            " WHERE entity = 'anomaly_case' AND entity_id = %s ORDER BY id",
            (str(case["id"]),),
        ).fetchall()
    assert [(a.split("/")[0], b, c) for a, b, c in audit] == [
        ("insp", "open", "assigned"),
        ("insp", "assigned", "confirmed"),
    ]
    # a viewer may read the worklist but not work it
    viewer = credentials(client.db_url, "viewer")
    assert client.get(url, headers=viewer).status_code == 200
    assert client.patch(status, json={"status": "open"}, headers=viewer).status_code == 403
    # closed: nothing more
    assert client.patch(status, json={"status": "open"}).status_code == 409
    # no longer in the default (live) worklist, but listed by status
    assert client.get("/worklist", params={"kind": "stopped"}).json()["count"] == 0
    listed = client.get("/worklist", params={"status": "confirmed"}).json()
    assert [c["id"] for c in listed["data"]] == [case["id"]]
    # outcomes: every rule of the confirmed case counts one confirmation
    out = {o["rule"]: o for o in client.get("/worklist/outcomes").json()["data"]}
    assert out["stopped"] == {
        "rule": "stopped",
        "confirmed": 1,
        "false_positive": 0,
        "precision": 1.0,
    }


def test_unknown_case_is_404(client):
    assert client.get("/worklist/cases/999999").status_code == 404
    r = client.patch("/worklist/cases/999999/status", json={"status": "assigned", "assignee": "x"})
    assert r.status_code == 404
    assert client.get("/worklist/cases/0").status_code == 422
