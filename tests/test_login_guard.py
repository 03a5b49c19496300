"""Review finding 5 on a real PostgreSQL through the real app: POST /auth/token locks a name
(and an address) out after repeated failures, doubling the lockout, audits each lockout, and
runs at most `login_concurrency` password checks at once."""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.security_policy import SecurityPolicy
from tests.api_auth import user

PASSWORD = "a long enough password"


def _client(url: str, **policy) -> TestClient:
    return TestClient(create_app(url, security=SecurityPolicy(**policy)))


def _login(client: TestClient, name: str, password: str):
    return client.post("/auth/token", data={"username": name, "password": password})


def _lockouts(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT actor, entity_id, after FROM audit_log"
            " WHERE entity = 'login' AND action = 'lockout' ORDER BY id"
        ).fetchall()


@pytest.fixture
def users(migrated_url: str) -> str:
    user(migrated_url, "ann", PASSWORD, ["viewer"])
    user(migrated_url, "bob", PASSWORD, ["viewer"])
    return migrated_url


def test_a_name_is_locked_out_after_its_failures(users):
    with _client(users, login_max_failures=3, login_lockout=60) as client:
        for name in ("ann", "ANN", "Ann"):  # one name in any case
            assert _login(client, name, "wrong password").status_code == 401
        r = _login(client, "ann", PASSWORD)  # the right password, too late
        assert r.status_code == 429 and "failed logins" in r.json()["detail"]
        assert 59 <= int(r.headers["retry-after"]) <= 60
        assert _login(client, "bob", PASSWORD).status_code == 200  # another name: not locked
    assert _lockouts(users) == [("gridread", "user:ann", {"failures": 3, "seconds": 60})]


def test_an_address_is_locked_out_after_its_failures(users):
    with _client(users, login_max_failures=100, login_max_failures_ip=3) as client:
        for name in ("ann", "bob", "carl"):
            assert _login(client, name, "wrong password").status_code == 401
        assert _login(client, "bob", PASSWORD).status_code == 429
    # TestClient's address is "testclient"
    assert [row[1] for row in _lockouts(users)] == ["ip:testclient"]


def test_the_lockout_doubles_with_each_further_failure(users):
    # first lockout 0.3 s: 3 failures → 0.3 s; after it, one more failure → 0.3 × 2 = 0.6 s
    with _client(users, login_max_failures=3, login_lockout=0.3) as client:
        for _ in range(3):
            assert _login(client, "ann", "wrong password").status_code == 401
        deadline = time.monotonic() + 10
        while (r := _login(client, "ann", "wrong password")).status_code == 429:
            assert time.monotonic() < deadline, "the lockout did not end"
        assert r.status_code == 401
        assert _login(client, "ann", PASSWORD).status_code == 429
    assert [row[2] for row in _lockouts(users)] == [
        {"failures": 3, "seconds": 0.3},
        {"failures": 4, "seconds": 0.6},
    ]


def test_a_right_password_resets_the_names_count(users):
    with _client(users, login_max_failures=3) as client:
        for _ in range(2):
            assert _login(client, "ann", "wrong password").status_code == 401
        assert _login(client, "ann", PASSWORD).status_code == 200
        for _ in range(2):
            assert _login(client, "ann", "wrong password").status_code == 401
        assert _login(client, "ann", PASSWORD).status_code == 200
    assert _lockouts(users) == []


def test_password_checks_at_once_are_bounded(users):
    with _client(users, login_concurrency=1) as client:
        checks = client.app.state.login_guard.checks
        client.portal.call(checks.acquire)  # a check in progress, as the app's loop sees it
        r = _login(client, "ann", PASSWORD)
        assert r.status_code == 429 and "at once" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        client.portal.call(checks.release)
        assert _login(client, "ann", PASSWORD).status_code == 200
    assert _lockouts(users) == []  # a busy answer is no failure


def test_the_settings_reach_the_api(monkeypatch):
    from gridread.runtime import api_app
    from gridread.settings import load_settings

    monkeypatch.setenv("GRIDREAD_LOGIN_MAX_FAILURES", "7")
    monkeypatch.setenv("GRIDREAD_LOGIN_LOCKOUT", "12.5")
    monkeypatch.setenv("GRIDREAD_AUDIT_HEAD_INTERVAL", "30")
    app = api_app("postgresql:///unused", load_settings({}))  # built, not started
    policy = app.state.security
    assert (policy.login_max_failures, policy.login_lockout) == (7, 12.5)
    assert policy.audit_head_interval == 30 and policy.login_concurrency == 2
    assert app.state.login_guard.policy is policy
