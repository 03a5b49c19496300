"""Review findings of issue 11 on a real PostgreSQL through the real app: users.manage does
not turn into acting as an operator, a password change ends the sessions, logout takes the
token from either header, names are one user in any case, a 422 never echoes a password."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api_auth import credentials, user

PASSWORD = "a long enough password"
NEW = "another long password"


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    headers = credentials(migrated_url, "admin", name="root")
    with TestClient(create_app(migrated_url), headers=headers) as c:
        c.db_url = migrated_url
        yield c


def _login(client: TestClient, name: str, password: str) -> dict[str, str]:
    r = client.post("/auth/token", data={"username": name, "password": password})
    assert r.status_code == 200, r.text
    # the client's own X-API-Key blanked: one credential at a time
    return {"Authorization": f"Bearer {r.json()['access_token']}", "X-API-Key": ""}


def test_a_manager_cannot_give_itself_operating_roles(client):
    r = client.patch("/users/root", json={"roles": ["admin", "load_operator"]})
    assert r.status_code == 403 and "your own roles" in r.json()["detail"]
    assert client.patch("/users/root", json={"roles": ["admin"]}).status_code == 200  # same
    assert client.get("/users/root").json()["roles"] == ["admin"]


@pytest.mark.parametrize("role", ["load_operator", "billing", "inspector", "admin"])
def test_no_key_for_another_users_operating_roles(client, role):
    client.post("/users", json={"name": "op2", "roles": [role]})
    r = client.post("/users/op2/keys", json={"label": "mine now"})
    assert r.status_code == 403 and "its own keys" in r.json()["detail"]
    with psycopg.connect(client.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys WHERE owner = 'op2'").fetchone() == (0,)


def test_machine_keys_and_ones_own_keys_are_allowed(client):
    client.post("/users", json={"name": "grafana", "roles": ["viewer", "metering_engineer"]})
    assert client.post("/users/grafana/keys", json={}).status_code == 201
    assert client.post("/users/root/keys", json={}).status_code == 201  # self-service
    # and the machine account cannot be made an operator while its key lives
    r = client.patch("/users/grafana", json={"roles": ["load_operator"]})
    assert r.status_code == 409 and "revoke the API keys" in r.json()["detail"]
    kid = client.get("/users/grafana/keys").json()[0]["id"]
    assert client.delete(f"/users/grafana/keys/{kid}").status_code == 204
    assert client.patch("/users/grafana", json={"roles": ["load_operator"]}).status_code == 200


def test_a_manager_sets_only_a_first_password(client):
    client.post("/users", json={"name": "op2", "roles": ["load_operator"]})
    r = client.patch("/users/op2", json={"password": PASSWORD})  # none yet: the first one
    assert r.status_code == 200 and r.json()["can_log_in"]
    r = client.patch("/users/op2", json={"password": NEW})
    assert r.status_code == 403 and "/auth/me/password" in r.json()["detail"]
    _login(client, "op2", PASSWORD)  # unchanged
    r = client.post("/auth/token", data={"username": "op2", "password": NEW})
    assert r.status_code == 401


def test_own_password_change_revokes_every_login_token(client):
    user(client.db_url, "ann", PASSWORD, ["viewer"])
    first, second = _login(client, "ann", PASSWORD), _login(client, "ann", PASSWORD)
    wrong = {"current_password": "not the password", "new_password": NEW}
    r = client.post("/auth/me/password", json=wrong, headers=first)
    assert r.status_code == 403
    assert client.get("/auth/me", headers=second).status_code == 200  # nothing changed
    body = {"current_password": PASSWORD, "new_password": NEW}
    assert client.post("/auth/me/password", json=body, headers=first).status_code == 204
    for h in (first, second):
        r = client.get("/auth/me", headers=h)
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.post("/auth/token", data={"username": "ann", "password": PASSWORD}).status_code
    assert client.get("/auth/me", headers=_login(client, "ann", NEW)).status_code == 200
    with psycopg.connect(client.db_url) as conn:
        rows = conn.execute(
            "SELECT actor, after FROM audit_log WHERE entity = 'user' AND action = 'password'"
        ).fetchall()
    assert rows == [("ann", {"password": "changed", "tokens_revoked": 2})]


def test_logout_with_the_token_in_x_api_key(client):
    user(client.db_url, "ann", PASSWORD, ["viewer"])
    token = _login(client, "ann", PASSWORD)["Authorization"].split()[1]
    as_key = {"X-API-Key": token}
    assert client.get("/auth/me", headers=as_key).json()["kind"] == "user"
    assert client.post("/auth/logout", headers=as_key).status_code == 204
    r = client.get("/auth/me", headers=as_key)
    assert r.status_code == 401 and "login token revoked" in r.json()["detail"]


def test_user_names_are_one_in_any_case(client):
    assert client.post("/users", json={"name": "ann", "roles": ["viewer"]}).status_code == 201
    r = client.post("/users", json={"name": "Ann", "roles": ["admin"]})
    assert r.status_code == 409 and "exists already" in r.json()["detail"]
    with psycopg.connect(client.db_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO users (name, created_by) VALUES ('ROOT', 'tests')")


@pytest.mark.parametrize(
    "path, body",
    [
        ("/users", {"name": "ann", "roles": ["viewer"], "password": "tiny-secret"}),
        ("/users", {"roles": ["viewer"], "password": "a long secret password"}),  # no name
        ("/auth/me/password", {"current_password": "x", "new_password": "tiny-secret"}),
    ],
)
def test_a_422_does_not_echo_a_password(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    secret = body["password"] if "password" in body else body["new_password"]
    assert secret not in r.text
    assert "[redacted]" in r.text or all("input" not in e for e in r.json()["errors"])


def test_an_operator_makes_its_own_key_from_a_login(client):
    user(client.db_url, "op1", PASSWORD, ["load_operator"])
    login = _login(client, "op1", PASSWORD)
    r = client.post("/auth/me/keys", json={"label": "script"}, headers=login)
    assert r.status_code == 201, r.text
    made = r.json()
    key = {"X-API-Key": made["key"]}
    me = client.get("/auth/me", headers=key).json()
    assert (me["name"], me["actor"]) == ("op1", f"op1/key:{made['id']}")
    # a key does not make keys: a login (a password proven) does
    r = client.post("/auth/me/keys", json={}, headers=key)
    assert r.status_code == 409 and "log in" in r.json()["detail"]
    with psycopg.connect(client.db_url) as conn:
        rows = conn.execute(
            "SELECT actor, entity_id FROM audit_log WHERE entity = 'api_key'"
            " AND action = 'create' AND entity_id = %s",
            (str(made["id"]),),
        ).fetchall()
    assert rows == [("op1", str(made["id"]))]
