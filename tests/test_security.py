"""Authentication and authorisation against a real PostgreSQL: API keys, login tokens, the
401/403 split, and the tables of migration 14."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import psycopg
import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from api.app import create_app
from api.credentials import hash_password, verify_password
from api.security import ROLE_PERMISSIONS, Permission, Principal, Role, require
from ingest.schema_security import ROLE_NAMES
from tests.api_auth import credentials, user

PASSWORD = "correct horse battery staple"


def _app(url: str, **kw):
    """The real app plus one route that needs billing.export, to see require() decide."""
    app = create_app(url, **kw)
    probe = APIRouter()

    @probe.get("/_probe")
    async def _probe(who: Annotated[Principal, Depends(require(Permission.BILLING_EXPORT))]):
        return {"actor": who.actor}

    app.include_router(probe)
    return app


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    with TestClient(_app(migrated_url), raise_server_exceptions=False) as c:
        yield c


def _key_id(headers: dict[str, str], url: str) -> int:
    from api.security import secret_hash

    with psycopg.connect(url) as conn:
        (kid,) = conn.execute(
            "SELECT id FROM api_keys WHERE key_hash = %s", (secret_hash(headers["X-API-Key"]),)
        ).fetchone()
    return kid


def assert_401(r, reason: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert reason in r.json()["detail"], r.json()


def test_role_names_in_the_schema_are_the_roles():
    assert set(ROLE_NAMES) == {r.value for r in Role} == {r.value for r in ROLE_PERMISSIONS}


def test_the_database_refuses_an_unknown_role(migrated_url):
    with psycopg.connect(migrated_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO users (name, roles, created_by) VALUES ('x', '{root}', 't')")


def test_password_hash_is_salted_scrypt_and_verifies():
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a != b and a.startswith("scrypt$15$8$3$")
    assert verify_password(PASSWORD, a)
    assert not verify_password(PASSWORD + "x", a)
    assert not verify_password(PASSWORD, None)
    assert not verify_password(PASSWORD, "md5$nonsense")


def test_no_credentials_is_401_with_www_authenticate(client):
    assert_401(client.get("/auth/me"), "not authenticated")
    assert_401(client.get("/_probe"), "not authenticated")
    assert_401(client.get("/auth/me", headers={"Authorization": "Basic eDp5"}), "not auth")


def test_two_credentials_at_once_are_401(client, migrated_url):
    h = credentials(migrated_url, "viewer")
    assert client.get("/auth/me", headers=h).status_code == 200
    both = h | {"Authorization": f"Bearer {h['X-API-Key']}"}
    assert_401(client.get("/auth/me", headers=both), "send one credential")


def test_unknown_key_and_token_are_401(client):
    assert_401(client.get("/auth/me", headers={"X-API-Key": "grk_nope"}), "unknown API key")
    bearer = {"Authorization": "Bearer grt_nope"}
    assert_401(client.get("/auth/me", headers=bearer), "unknown login token")


def test_api_key_authenticates_as_its_owner(client, migrated_url):
    h = credentials(migrated_url, "billing", name="bill")
    kid = _key_id(h, migrated_url)
    me = client.get("/auth/me", headers=h)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "name": "bill",
        "kind": "api_key",
        "actor": f"bill/key:{kid}",
        "roles": ["billing"],
        "permissions": ["billing.export", "read", "reads.edit"],
    }
    # the same key as a bearer token
    bearer = {"Authorization": f"Bearer {h['X-API-Key']}"}
    assert client.get("/_probe", headers=bearer).json() == {"actor": f"bill/key:{kid}"}
    with psycopg.connect(migrated_url) as conn:
        (used,) = conn.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (kid,)).fetchone()
    assert used is not None


def test_missing_permission_is_403(client, migrated_url):
    for role in Role:
        r = client.get("/_probe", headers=credentials(migrated_url, role))
        if Permission.BILLING_EXPORT in ROLE_PERMISSIONS[role]:
            assert r.status_code == 200, (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
            assert r.json()["detail"] == "permission 'billing.export' needed"


@pytest.mark.parametrize(
    "sql, reason",
    [
        ("UPDATE api_keys SET revoked_at = now()", "API key revoked"),
        ("UPDATE api_keys SET expires_at = now() - interval '1 s'", "API key expired"),
        ("UPDATE users SET active = false", "user inactive"),
    ],
)
def test_revoked_expired_or_inactive_is_401(client, migrated_url, sql, reason):
    h = credentials(migrated_url, "admin")
    assert client.get("/auth/me", headers=h).status_code == 200
    with psycopg.connect(migrated_url) as conn:
        conn.execute(sql)
    assert_401(client.get("/auth/me", headers=h), reason)


def test_key_with_future_expiry_works(client, migrated_url):
    h = credentials(migrated_url, "viewer")
    with psycopg.connect(migrated_url) as conn:
        conn.execute("UPDATE api_keys SET expires_at = now() + interval '1 hour'")
    assert client.get("/auth/me", headers=h).status_code == 200


def test_login_issues_a_bearer_token(migrated_url):
    user(migrated_url, "ann", PASSWORD, ["load_operator", "viewer"])
    with TestClient(_app(migrated_url, token_lifetime=120)) as client:
        before = datetime.now(UTC)
        r = client.post("/auth/token", data={"username": "ann", "password": PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 120
        assert body["access_token"].startswith("grt_")
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        me = client.get("/auth/me", headers=bearer).json()
        assert (me["name"], me["kind"], me["actor"]) == ("ann", "user", "ann")
        assert me["roles"] == ["load_operator", "viewer"]
        assert client.get("/_probe", headers=bearer).status_code == 403
        with psycopg.connect(migrated_url) as conn:
            (expires,) = conn.execute("SELECT expires_at FROM login_tokens").fetchone()
        # the setting's 120 s from now (a few seconds of slack for the request itself)
        assert before + timedelta(seconds=118) < expires < before + timedelta(seconds=125)


@pytest.mark.parametrize(
    "name, password",
    [
        ("ann", "wrong password"),
        ("nobody", PASSWORD),
        ("keyonly", PASSWORD),
        ("ann\x00", PASSWORD),  # not a user name at all (and no NUL reaches SQL)
        ("", ""),
    ],
)
def test_login_refused_alike(client, migrated_url, name, password):
    user(migrated_url, "ann", PASSWORD, ["viewer"])
    credentials(migrated_url, "viewer", name="keyonly")  # no password: cannot log in
    r = client.post("/auth/token", data={"username": name, "password": password})
    if name:
        assert_401(r, "wrong user name or password")
    else:
        assert r.status_code == 422  # the form's fields are required


def test_login_of_inactive_user_refused(client, migrated_url):
    user(migrated_url, "ann", PASSWORD, ["viewer"])
    with psycopg.connect(migrated_url) as conn:
        conn.execute("UPDATE users SET active = false")
    r = client.post("/auth/token", data={"username": "ann", "password": PASSWORD})
    assert_401(r, "wrong user name or password")


@pytest.mark.parametrize(
    "sql, reason",
    [
        ("UPDATE login_tokens SET revoked_at = now()", "login token revoked"),
        ("UPDATE login_tokens SET expires_at = now() - interval '1 s'", "login token expired"),
        ("UPDATE users SET active = false", "user inactive"),
    ],
)
def test_token_revoked_expired_or_inactive_is_401(client, migrated_url, sql, reason):
    user(migrated_url, "ann", PASSWORD, ["viewer"])
    token = client.post("/auth/token", data={"username": "ann", "password": PASSWORD}).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.get("/auth/me", headers=bearer).status_code == 200
    with psycopg.connect(migrated_url) as conn:
        conn.execute(sql)
    assert_401(client.get("/auth/me", headers=bearer), reason)


def test_secrets_are_stored_hashed(client, migrated_url):
    h = credentials(migrated_url, "viewer")
    user(migrated_url, "ann", PASSWORD, ["viewer"])
    token = client.post("/auth/token", data={"username": "ann", "password": PASSWORD}).json()
    with psycopg.connect(migrated_url) as conn:
        dump = str(conn.execute("SELECT * FROM api_keys, login_tokens, users").fetchall())
        audit = str(conn.execute("SELECT * FROM audit_log").fetchall())
    for secret in (h["X-API-Key"], token["access_token"], PASSWORD):
        assert secret not in dump and secret not in audit
    assert h["X-API-Key"][:12] in dump  # the display prefix only


def test_a_405_names_every_method_of_the_path(client):
    # GET and POST /users are two routes: Starlette alone answered "Allow: GET"
    assert client.options("/users").headers["allow"] == "GET, POST"
    assert client.delete("/users/x").headers["allow"] == "GET, PATCH"
    assert client.get("/users/x/keys/3").headers["allow"] == "DELETE"


def test_logout_revokes_the_token_at_once(client, migrated_url):
    user(migrated_url, "ann", PASSWORD, ["viewer"])
    login = {"username": "ann", "password": PASSWORD}
    first = client.post("/auth/token", data=login).json()["access_token"]
    second = client.post("/auth/token", data=login).json()["access_token"]
    bearer = {"Authorization": f"Bearer {first}"}
    assert client.post("/auth/logout", headers=bearer).status_code == 204
    assert_401(client.get("/auth/me", headers=bearer), "login token revoked")
    # the user's other session goes on
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    # an API key is not ended by a logout
    r = client.post("/auth/logout", headers=credentials(migrated_url, "viewer"))
    assert r.status_code == 409 and "API key" in r.json()["detail"]
