"""The audit log's hash chain (migration 14) on a real PostgreSQL: each row's hash covers
the previous row's hash and its own content; the log is append-only."""

from __future__ import annotations

import hashlib
import json

import psycopg
import pytest

from ingest.audit import record


def test_rows_are_chained_by_sha256(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        a = record(conn, "ann", "update", "meter", "m-1", {"ct": 40}, {"ct": 50})
        # the existing writers' raw INSERT works unchanged and joins the chain
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
            " VALUES ('gridread', 'create', 'device', '7', NULL, '{\"kind\": \"meter\"}')"
        )
        rows = conn.execute(
            "SELECT id, (extract(epoch FROM at) * 1000000)::bigint, actor, action, entity,"
            " entity_id, before, after, prev_hash, hash FROM audit_log ORDER BY id"
        ).fetchall()
    assert rows[0][0] == a and len(rows) == 2
    prev = bytes(32)  # the genesis
    for id_, at_us, actor, action, entity, eid, before, after, prev_hash, h in rows:
        # canonical content: jsonb's text of [id, at µs, actor, action, entity, id, before,
        # after]; jsonb writes ", " between items and ": " after keys
        content = json.dumps([id_, at_us, actor, action, entity, eid, before, after])
        assert bytes(prev_hash) == prev
        assert bytes(h) == hashlib.sha256(prev + content.encode()).digest()
        prev = bytes(h)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
def test_log_is_append_only(migrated_url, sql):
    with psycopg.connect(migrated_url) as conn:
        record(conn, "ann", "update", "meter", "m-1", None, {"ct": 50})
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(sql)


def test_migration_chains_the_rows_written_before_it(db_url, storage, monkeypatch):
    from ingest import schema
    from ingest.audit import verdict, verify_chain_sql

    # a database of the previous version (migrations up to 13) with audit rows in it
    before14 = [m for m in schema.MIGRATIONS if m[0] != 14]
    monkeypatch.setattr(schema, "MIGRATIONS", before14)
    with psycopg.connect(db_url, autocommit=True) as conn:
        schema.migrate(conn, storage=storage)
        for i in range(3):
            conn.execute(
                "INSERT INTO audit_log (actor, action, entity, entity_id, after)"
                " VALUES ('config-file', 'create', 'device', %s, '{}')",
                (str(i),),
            )
    monkeypatch.undo()
    with psycopg.connect(db_url, autocommit=True) as conn:
        schema.migrate(conn, storage=storage)  # applies 14: the old rows get their hashes
        record(conn, "ann", "update", "device", "0", {}, {"x": 1})  # and the chain goes on
        sql, params = verify_chain_sql()
        got = verdict(conn.execute(sql, params).fetchone())
    assert got["ok"] and got["rows"] == 4, got
