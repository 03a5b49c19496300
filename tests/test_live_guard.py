"""What an open live stream may hold and for how long, over real HTTP (uvicorn, httpx, the
real PostgreSQL): a stream holds no pool connection, a user holds at most
`streams_per_caller` streams, and a stream ends soon after its credentials stop holding."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import psycopg
import pytest

from api.live import LivePolicy
from tests.api_auth import credentials, user
from tests.test_live_api import Live, Stream, seed, serve


async def _ended(s: Stream, deadline: float = 10.0) -> None:
    """The stream's response is over (the reader put its end mark)."""
    async with asyncio.timeout(deadline):
        assert await s._events.get() is None


def _as(live: Live, headers: dict[str, str]) -> Live:
    return dataclasses.replace(live, headers=headers)


async def test_more_streams_than_the_pool_and_the_api_still_answers(migrated_url):
    # the app's pool holds 4 connections (create_app's default); 6 streams are open
    ids = seed(migrated_url)
    async with serve(migrated_url) as live:
        live.ids = ids
        viewers = [credentials(migrated_url, "viewer") for _ in range(3)]
        streams = [Stream(_as(live, h)) for h in viewers for _ in range(2)]
        for s in streams:
            await s.__aenter__()  # asserts the 200
        try:
            for s in streams:
                assert (await s.next())[0] == "ready"
            with psycopg.connect(migrated_url) as conn:
                (idle,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()"
                ).fetchone()
            assert idle == 0
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                answers = await asyncio.gather(
                    *(client.get("/devices", headers=viewers[i % 3]) for i in range(8))
                )
            assert [r.status_code for r in answers] == [200] * 8
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)


async def test_a_user_holds_at_most_streams_per_caller(migrated_url):
    seed(migrated_url)
    async with serve(migrated_url, LivePolicy(streams_per_caller=2)) as live:
        ann = credentials(migrated_url, "viewer", name="ann")
        bob = credentials(migrated_url, "viewer", name="bob")
        feed = live.app.state.live
        async with Stream(_as(live, ann)) as a1, Stream(_as(live, ann)) as a2:
            await a1.next()
            await a2.next()
            async with (
                httpx.AsyncClient(base_url=live.url, timeout=30) as client,
                client.stream("GET", "/live/stream", headers=ann) as third,
            ):
                assert third.status_code == 429  # a stream (200) would not end: not read
                detail = (await third.aread()).decode()
            assert "ann has 2 live streams open already" in detail
            async with Stream(_as(live, bob)) as b:  # another user is not counted with ann
                assert (await b.next())[0] == "ready"
            assert feed.streams["ann"] == 2
        # closed by the client: the server gives the places back
        async with asyncio.timeout(10):
            while feed.streams["ann"]:
                await asyncio.sleep(0.02)
        async with Stream(_as(live, ann)) as again:
            assert (await again.next())[0] == "ready"


_CUT = {
    "revoked key": (
        "UPDATE api_keys SET revoked_at = now() WHERE owner = 'ann'",
        "API key revoked",
    ),
    "inactive user": ("UPDATE users SET active = false WHERE name = 'ann'", "user inactive"),
    "read taken away": (
        "UPDATE users SET roles = '{}' WHERE name = 'ann'",
        "permission 'read' no longer granted",
    ),
}


@pytest.mark.parametrize("cut", list(_CUT))
async def test_a_stream_ends_when_its_credentials_stop_holding(migrated_url, cut):
    seed(migrated_url)
    async with serve(migrated_url, LivePolicy(recheck=0.3)) as live:
        ann = credentials(migrated_url, "viewer", name="ann")
        async with Stream(_as(live, ann)) as s:
            assert (await s.next())[0] == "ready"
            await s.quiet(1.0)  # rechecked meanwhile: still open while the key holds
            sql, reason = _CUT[cut]
            with psycopg.connect(migrated_url, autocommit=True) as conn:
                conn.execute(sql)
            kind, _, data = await s.next()
            assert (kind, data) == ("closed", {"reason": reason})
            await _ended(s)
        assert live.app.state.live.streams["ann"] == 0


async def _login(live: Live, name: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        r = await client.post("/auth/token", data={"username": name, "password": "pw-" * 5})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_logout_ends_the_stream(migrated_url):
    seed(migrated_url)
    async with serve(migrated_url, LivePolicy(recheck=0.3)) as live:
        user(migrated_url, "cat", "pw-" * 5, ["viewer"])
        token = await _login(live, "cat")
        async with Stream(_as(live, token)) as s:
            assert (await s.next())[0] == "ready"
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                assert (await client.post("/auth/logout", headers=token)).status_code == 204
            kind, _, data = await s.next()
            assert (kind, data) == ("closed", {"reason": "login token revoked"})
            await _ended(s)


async def test_a_stream_ends_at_its_tokens_expiry(migrated_url):
    # rechecked only every 600 s: what ends it is the token's own expiry, 1.5 s away
    seed(migrated_url)
    async with serve(migrated_url, LivePolicy(recheck=600)) as live:
        user(migrated_url, "dan", "pw-" * 5, ["viewer"])
        token = await _login(live, "dan")
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            (expires,) = conn.execute(
                "UPDATE login_tokens SET expires_at = now() + interval '1.5 s'"
                " WHERE owner = 'dan' RETURNING extract(epoch FROM expires_at)::float8"
            ).fetchone()
        async with Stream(_as(live, token)) as s:
            assert (await s.next())[0] == "ready"
            kind, _, data = await s.next()
            assert time.time() >= expires
            assert (kind, data) == ("closed", {"reason": "login token expired"})
            await _ended(s)
