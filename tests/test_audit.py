"""GET /audit and GET /audit/verify on a real PostgreSQL: filters and pages, unusual edits
flagged by the real writers' rows, tampering found, concurrent writers keep the chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.vee_store import edit_read
from api.app import create_app
from gridread.inventory import store_inventory
from ingest.audit import record
from tests.api_auth import credentials
from tests.test_topology import MOVE, TOTAL_A02, edited
from tests.topology_site import TOPOLOGY, inventory


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    app = create_app(migrated_url, audit_edit_flag_share=0.1)
    headers = credentials(migrated_url, "inspector")
    with TestClient(app, headers=headers, raise_server_exceptions=False) as c:
        c.db_url = migrated_url
        yield c


def _tamper(url: str, sql: str) -> None:
    """What only the database's owner can do: switch the append-only triggers off."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute(sql)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


def _rows(url: str, n: int) -> list[int]:
    with psycopg.connect(url) as conn:
        return [record(conn, "ann", "update", "meter", f"m-{i}", {"v": i}, {"v": i + 1})
                for i in range(n)]  # fmt: skip


def test_permission(client):
    viewer = credentials(client.db_url, "viewer")
    admin = credentials(client.db_url, "admin")
    for path in ("/audit", "/audit/verify"):
        assert client.get(path, headers=viewer).status_code == 403
        assert client.get(path, headers=admin).status_code == 200
        assert client.get(path, headers={"X-API-Key": ""}).status_code == 401


def test_an_intact_chain_verifies(client):
    _rows(client.db_url, 5)
    got = client.get("/audit/verify").json()
    # 5 rows + the 2 of the test's own users and keys (credentials(): user + key)
    assert got["ok"] and got["first_broken"] is None and got["rows"] == 5 + 2
    with psycopg.connect(client.db_url) as conn:
        (head,) = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert got["head"] == bytes(head).hex()


def test_a_changed_row_is_found(client):
    ids = _rows(client.db_url, 5)
    _tamper(client.db_url, f"UPDATE audit_log SET after = '{{\"v\": 99}}' WHERE id = {ids[2]}")
    got = client.get("/audit/verify").json()
    assert not got["ok"]
    assert got["first_broken"]["id"] == ids[2]
    assert "content does not match its hash" in got["first_broken"]["reason"]


def test_a_changed_row_with_its_hash_recomputed_breaks_the_next_link(client):
    ids = _rows(client.db_url, 5)
    _tamper(
        client.db_url,
        f"UPDATE audit_log SET actor = 'mallory', hash = sha256(prev_hash || audit_canonical("
        f"id, at, 'mallory', action, entity, entity_id, before, after)) WHERE id = {ids[2]}",
    )
    got = client.get("/audit/verify").json()
    assert got["first_broken"]["id"] == ids[3]
    assert "prev_hash is not the previous row's hash" in got["first_broken"]["reason"]


def test_a_removed_row_is_found(client):
    ids = _rows(client.db_url, 5)
    _tamper(client.db_url, f"DELETE FROM audit_log WHERE id = {ids[1]}")
    assert client.get("/audit/verify").json()["first_broken"]["id"] == ids[2]
    _tamper(client.db_url, f"DELETE FROM audit_log WHERE id = {ids[4]}")  # the last one
    got = client.get("/audit/verify").json()
    assert got["first_broken"]["id"] == ids[2]  # still the first
    _tamper(client.db_url, f"DELETE FROM audit_log WHERE id >= {ids[1]}")  # the whole tail
    got = client.get("/audit/verify").json()
    assert got["first_broken"] == {
        "id": ids[4],
        "reason": "the chain's head names a row that is not the last one (rows at the end"
        " were removed)",
    }


def test_concurrent_writers_keep_the_chain(client):
    # 4 writers × 25 transactions of 1-3 rows each, all at once: the row lock on the
    # chain's head orders them, ids follow the chain
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with psycopg.connect(client.db_url) as conn:
                barrier.wait()
                for t in range(25):
                    with conn.transaction():
                        for r in range(1 + (w + t) % 3):
                            record(conn, f"w{w}", "update", "meter", f"{t}.{r}", None, {"t": t})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    expected = sum(1 + (w + t) % 3 for w in range(4) for t in range(25))  # = 200
    got = client.get("/audit/verify").json()
    assert got["ok"], got
    assert got["rows"] == expected + 2


def test_filters_and_pages(client):
    _rows(client.db_url, 7)
    with psycopg.connect(client.db_url) as conn:
        record(conn, "bob", "create", "area", "a-9", None, {"kva": 200})
        (mid,) = conn.execute("SELECT at FROM audit_log WHERE entity = 'area'").fetchone()
    page = client.get("/audit", params={"actor": "ann", "limit": 3}).json()
    assert [e["entity_id"] for e in page["data"]] == ["m-6", "m-5", "m-4"]  # newest first
    seen = [e["entity_id"] for e in page["data"]]
    while page["next_before_id"] is not None:
        page = client.get(
            "/audit", params={"actor": "ann", "limit": 3, "before_id": page["next_before_id"]}
        ).json()
        seen += [e["entity_id"] for e in page["data"]]
    assert seen == [f"m-{i}" for i in range(6, -1, -1)]
    got = client.get("/audit", params={"entity": "area", "entity_id": "a-9"}).json()["data"]
    assert [(e["actor"], e["after"]) for e in got] == [("bob", {"kva": 200})]
    assert len(got[0]["hash"]) == 64 and got[0]["unusual"] == []
    window = {"start": mid.isoformat(), "end": datetime.now(UTC).isoformat()}
    assert [e["entity"] for e in client.get("/audit", params=window).json()["data"]] == ["area"]
    r = client.get("/audit", params={"start": mid.isoformat(), "end": mid.isoformat()})
    assert r.status_code == 422


def test_unusual_edits_are_flagged_with_their_rule(client):
    url = client.db_url
    # the real writers: a meter moved to another area and a CT ratio change (new periods of
    # the metering point, tests/test_topology.py), read edits (analytics.vee_store)
    moved = (
        '[[metering_point]]\nmeter = "a-01-c0001"\nrole = "customer"\narea = "a-02"\n'
        'phase = "A"\ncustomer_class = "residential"\nvalid_from = 2026-03-01\n'
    )
    first = edited(moved, "").replace(
        'tariff = "residential-tou"\nvalid_to = 2026-03-01', 'tariff = "residential-tou"'
    )
    ts = datetime(2026, 11, 10, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        store_inventory(conn, inventory(first), actor="ops")
        store_inventory(conn, inventory(TOPOLOGY), actor="ops")  # c0001 → a-02 in March
        store_inventory(conn, inventory(edited(TOTAL_A02, MOVE)), actor="ops")  # CT 40 → 60
        (dev,) = conn.execute("SELECT id FROM devices WHERE name = 'a-01-c0001'").fetchone()
        conn.execute(
            "INSERT INTO validated_reads (device_id, quantity, ts, version, value, method, valid)"
            " VALUES (%s, '1.8.0*d', %s, 1, 300, 'actual', true)",
            (dev, ts),
        )
        for value in (290, 200):  # 300 → 290: 3.3 % ≤ 10 %; 290 → 200: 31 % > 10 %
            edit_read(conn, device_id=dev, quantity="1.8.0*d", ts=ts, value=value,
                      actor="li", reason="photo")  # fmt: skip
        conn.commit()
    flagged = client.get("/audit", params={"unusual": True}).json()["data"]
    got = [(e["entity"], e["entity_id"], e["unusual"]) for e in reversed(flagged)]
    assert got == [
        # the site's own CT change of a-01's total meter, 80 → 120 in March (first load)
        ("metering_point", "a-01-total@2026-02-28T16:00:00+00:00", ["multiplier_change"]),
        ("metering_point", "a-01-c0001@2026-02-28T16:00:00+00:00", ["meter_moved_area"]),
        ("metering_point", "a-02-total@2026-05-31T16:00:00+00:00", ["multiplier_change"]),
        ("validated_read", f"{dev}/1.8.0*d/{ts.isoformat()}", ["large_read_edit"]),
    ]
    # the closing updates (valid_to set) and the small edit are not flagged
    every = client.get("/audit", params={"limit": 1000}).json()["data"]
    assert sum(bool(e["unusual"]) for e in every) == 4
