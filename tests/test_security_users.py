"""The users API (users.manage) and `gridread users` on a real PostgreSQL: users, roles, API
keys shown once and revoked at once, every change audited as its maker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.security import Role
from gridread.cli_users import ROLES
from tests.api_auth import credentials

PASSWORD = "a long enough password"


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    headers = credentials(migrated_url, "admin", name="root")
    with TestClient(create_app(migrated_url), headers=headers) as c:
        c.db_url = migrated_url
        yield c


def _audit(url: str, entity: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT actor, action, entity_id, before, after FROM audit_log"
            " WHERE entity = %s ORDER BY id",
            (entity,),
        ).fetchall()


def test_the_cli_knows_the_roles():
    assert ROLES == tuple(r.value for r in Role)


def test_only_users_manage_may(client):
    for role in Role:
        h = credentials(client.db_url, role)
        want = 200 if role is Role.ADMIN else 403
        assert client.get("/users", headers=h).status_code == want, role
        body = {"name": f"x-{role.value}", "roles": ["viewer"]}
        assert client.post("/users", json=body, headers=h).status_code == (
            201 if role is Role.ADMIN else 403
        )


def test_create_log_in_and_change_roles(client):
    r = client.post("/users", json={"name": "ann", "roles": ["viewer"], "password": PASSWORD})
    assert r.status_code == 201, r.text
    assert r.json()["roles"] == ["viewer"] and r.json()["can_log_in"]
    assert r.json()["created_by"].startswith("root/key:")
    assert client.post("/users", json={"name": "ann", "roles": ["viewer"]}).status_code == 409
    token = client.post("/auth/token", data={"username": "ann", "password": PASSWORD}).json()
    # (the client's own X-API-Key blanked: one credential at a time)
    ann = {"Authorization": f"Bearer {token['access_token']}", "X-API-Key": ""}
    assert client.get("/auth/me", headers=ann).json()["permissions"] == ["read"]
    r = client.patch("/users/ann", json={"roles": ["billing", "inspector"]})
    assert r.status_code == 200 and r.json()["roles"] == ["billing", "inspector"]
    # the roles count from the next request on, for a token already issued too
    assert "audit.read" in client.get("/auth/me", headers=ann).json()["permissions"]
    assert client.patch("/users/ann", json={"active": False}).json()["active"] is False
    assert client.get("/auth/me", headers=ann).status_code == 401
    audit = _audit(client.db_url, "user")
    ann_rows = [(a[1], a[3], a[4]) for a in audit if a[2] == "ann"]
    assert [row[0] for row in ann_rows] == ["create", "update", "update"]
    assert ann_rows[1][1]["roles"] == ["viewer"]
    assert ann_rows[1][2]["roles"] == ["billing", "inspector"]
    assert ann_rows[2][2]["active"] is False
    assert all(a[0].startswith("root/key:") for a in audit if a[2] == "ann")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "has space", "roles": ["viewer"]},
        {"name": "ann", "roles": ["root"]},
        {"name": "ann", "roles": []},
        {"name": "ann", "roles": ["viewer"], "password": "short"},
    ],
)
def test_bad_users_are_422(client, body):
    assert client.post("/users", json=body).status_code == 422


def test_a_manager_cannot_lock_themself_out(client):
    r = client.patch("/users/root", json={"active": False})
    assert r.status_code == 409 and "lock yourself out" in r.json()["detail"]
    # nobody changes their own roles (tests/test_security_review.py)
    assert client.patch("/users/root", json={"roles": ["viewer"]}).status_code == 403
    assert client.patch("/users/root", json={"roles": ["admin", "viewer"]}).status_code == 403
    assert client.patch("/users/nobody", json={"active": False}).status_code == 404


def test_keys_are_shown_once_and_revoked_at_once(client):
    client.post("/users", json={"name": "grafana", "roles": ["viewer"]})
    r = client.post("/users/grafana/keys", json={"label": "dashboards"})
    assert r.status_code == 201, r.text
    made = r.json()
    key = made["key"]
    assert key.startswith("grk_") and made["prefix"] == key[:12]
    listed = client.get("/users/grafana/keys").json()
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    assert client.get("/devices", headers={"X-API-Key": key}).status_code == 200
    assert client.delete(f"/users/grafana/keys/{made['id']}").status_code == 204
    assert client.get("/devices", headers={"X-API-Key": key}).status_code == 401
    assert client.delete(f"/users/grafana/keys/{made['id']}").status_code == 204  # again: ok
    assert client.delete(f"/users/root/keys/{made['id']}").status_code == 404  # not root's
    assert client.post("/users/nobody/keys", json={}).status_code == 404
    past = {"expires_at": "2020-01-01T00:00:00Z"}
    assert client.post("/users/grafana/keys", json=past).status_code == 422
    audit = [(a[1], a[4]) for a in _audit(client.db_url, "api_key") if a[2] == str(made["id"])]
    assert audit == [
        ("create", {"owner": "grafana", "label": "dashboards", "prefix": key[:12]}),
        ("revoke", {"owner": "grafana"}),
        ("revoke", {"owner": "grafana"}),
    ]


def _cli(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {"GRIDREAD_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "gridread.cli", "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_add_key_list_revoke(migrated_url):
    r = _cli(migrated_url, "add", "ops", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "user ops added (admin)"
    r = _cli(migrated_url, "key", "ops", "--label", "laptop")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()  # the key alone on stdout, the note on stderr
    assert key.startswith("grk_") and "shown once" in r.stderr
    with TestClient(create_app(migrated_url)) as client:
        me = client.get("/auth/me", headers={"X-API-Key": key}).json()
        assert me["name"] == "ops" and me["roles"] == ["admin"]
        login = client.post("/auth/token", data={"username": "ops", "password": PASSWORD})
        assert login.status_code == 200
        listed = _cli(migrated_url, "list").stdout.splitlines()
        assert listed[1].split() == ["ops", "admin", "yes", "yes", "1"]
        key_id = me["actor"].split(":")[-1]
        assert _cli(migrated_url, "revoke", "ops", key_id).returncode == 0
        assert client.get("/auth/me", headers={"X-API-Key": key}).status_code == 401
    assert _cli(migrated_url, "list").stdout.splitlines()[1].split()[-1] == "0"
    with psycopg.connect(migrated_url) as conn:
        actors = conn.execute("SELECT DISTINCT actor FROM audit_log").fetchall()
    assert len(actors) == 1 and actors[0][0].startswith("cli:")


@pytest.mark.parametrize(
    "args, error",
    [
        (("add", "x", "--role", "root"), "unknown role 'root'"),
        (("add", "bad name", "--role", "viewer"), "user name 'bad name'"),
        (("key", "nobody"), "no user 'nobody'"),
        (("revoke", "nobody", "7"), "no key 7 of user 'nobody'"),
    ],
)
def test_cli_errors_are_one_line(migrated_url, args, error):
    r = _cli(migrated_url, *args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("gridread: error: ") and error in lines[0]


def test_cli_refuses_a_short_password(migrated_url):
    r = _cli(migrated_url, "add", "x", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert r.returncode == 2 and "at least 12 characters" in r.stderr
