"""Review finding 3 on a real PostgreSQL: the chain's head moves only with an insert; the app's
own role (not the owner, `app_role_grants`) can append to the audit log but not rewrite it or
switch its triggers off; the head is exported (metric, log) after each verification."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.app import create_app
from api.security_policy import SecurityPolicy
from ingest.audit import record, verdict, verify_chain_sql
from ingest.schema_security import app_role_grants
from tests.api_auth import credentials


def _verify(conn) -> dict:
    sql, params = verify_chain_sql()
    return verdict(conn.execute(sql, params).fetchone())


def test_the_head_moves_only_with_an_insert(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        record(conn, "ann", "update", "meter", "m-1", None, {"ct": 50})
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit_log insert"):
            conn.execute("UPDATE audit_chain SET last_id = 0, hash = %s", (bytes(32),))
        conn.rollback()
        record(conn, "ann", "update", "meter", "m-1", {"ct": 50}, {"ct": 60})  # still chains
        conn.commit()
        assert _verify(conn)["ok"] and _verify(conn)["rows"] == 2


@pytest.fixture
def app_url(migrated_url: str):
    """`migrated_url` as a login role that owns nothing, granted as the README says."""
    role = f"app_{secrets.token_hex(4)}"
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-password'")
        conn.execute(app_role_grants(role))
    yield make_conninfo(
        **{**conninfo_to_dict(migrated_url), "user": role, "password": "app-password"}
    )
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "ALTER TABLE audit_log DISABLE TRIGGER USER",
        "UPDATE audit_chain SET last_id = 0",
        "TRUNCATE audit_log",
    ],
)
def test_the_app_role_appends_but_cannot_rewrite(app_url, sql):
    with psycopg.connect(app_url) as conn:
        # the app's writers work: an audited change of a user, chained by the trigger
        conn.execute("INSERT INTO users (name, created_by) VALUES ('ann', 'tests')")
        record(conn, "tests", "create", "user", "ann", None, {"roles": []})
        conn.commit()
        assert _verify(conn)["ok"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)


def _last_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT last_id FROM audit_chain").fetchone()[0]


def test_verify_exports_the_head(migrated_url, caplog):
    headers = credentials(migrated_url, "inspector")  # its creation: audit rows
    app = create_app(migrated_url, security=SecurityPolicy(audit_head_interval=3600))
    with caplog.at_level("INFO", logger="gridread.audit"):
        with TestClient(app, headers=headers) as client:
            # the export at start-up first (the periodic one: next in an hour)
            deadline = time.monotonic() + 10
            while f"audit chain head id={_last_id(migrated_url)} " not in caplog.text:
                assert time.monotonic() < deadline, "no export of the head at start-up"
                time.sleep(0.01)
            with psycopg.connect(migrated_url) as conn:
                record(conn, "tests", "update", "meter", "m-1", None, {"ct": 50})
            last_id = _last_id(migrated_url)
            body = client.get("/audit/verify").json()
            assert body["ok"] and body["rows"] == 3
            metrics = client.get("/metrics").text
    line = f'gridread_audit_chain_head_info{{hash="{body["head"]}",id="{last_id}"}} 1.0'
    assert line in metrics
    assert f"gridread_audit_chain_head_id {float(last_id)}" in metrics
    assert f"audit chain head id={last_id} hash={body['head']}" in caplog.text
