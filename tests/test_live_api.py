"""The live feed over real HTTP: uvicorn on a free port, httpx streaming, the real writer and
collector store writing into PostgreSQL, the app's LISTEN connection in between."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.live import LivePolicy
from ingest.model import Event, Reading
from ingest.writer import ReadingWriter
from tests.api_auth import credentials
from tests.conftest import free_port

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@dataclass
class Live:
    url: str  # the API's base URL
    db: str
    ids: dict[str, int]
    headers: dict[str, str]
    app: object


def seed(url: str) -> dict[str, int]:
    """Area a1 with meters m1, m2 in force (and m0, which left it); m3 on no area."""
    ids = {}
    with psycopg.connect(url) as conn:
        for name in ("m0", "m1", "m2", "m3"):
            (ids[name],) = conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
                " VALUES (%s, 'meter', 'dlt645', '/dev/null', 60) RETURNING id",
                (name,),
            ).fetchone()
        (sub,) = conn.execute(
            "INSERT INTO substations (name, voltage_kv) VALUES ('s1', 35) RETURNING id"
        ).fetchone()
        (feeder,) = conn.execute(
            "INSERT INTO feeders (name, substation_id) VALUES ('f1', %s) RETURNING id", (sub,)
        ).fetchone()
        (area,) = conn.execute(
            "INSERT INTO areas (name, feeder_id, transformer_kva) VALUES ('a1', %s, 200)"
            " RETURNING id",
            (feeder,),
        ).fetchone()
        for name, to in (("m0", T0), ("m1", None), ("m2", None)):
            conn.execute(
                "INSERT INTO metering_points (device_id, role, area_id, valid_from, valid_to)"
                " VALUES (%s, 'customer', %s, %s, %s)",
                (ids[name], area, T0 - timedelta(days=30), to),
            )
    return ids


@contextlib.asynccontextmanager
async def serve(db: str, policy: LivePolicy | None = None) -> AsyncIterator[Live]:
    app = create_app(db, live_feed=policy)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not (server.started and app.state.live.listening.is_set()):
                await asyncio.sleep(0.02)
        yield Live(f"http://127.0.0.1:{port}", db, {}, {}, app)
    finally:
        server.should_exit = True
        await task
        assert app.state.live.stopped


@pytest.fixture
async def live(migrated_url) -> AsyncIterator[Live]:
    ids = seed(migrated_url)
    async with serve(migrated_url) as it:
        it.ids, it.headers = ids, credentials(migrated_url, "viewer")
        yield it


class Stream:
    """One SSE connection: `await next()` → (event, id, data), within a deadline."""

    def __init__(self, live: Live, params: dict | None = None, last: str | None = None):
        self.live, self.params, self.last = live, params or {}, last
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Stream:
        headers = dict(self.live.headers)
        if self.last:
            headers["Last-Event-ID"] = self.last
        client = await self._stack.enter_async_context(
            httpx.AsyncClient(base_url=self.live.url, timeout=30)
        )
        response = await self._stack.enter_async_context(
            client.stream("GET", "/live/stream", params=self.params, headers=headers)
        )
        assert response.status_code == 200, await response.aread()
        self._events: asyncio.Queue = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(response))
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await self._stack.aclose()

    async def _read(self, response: httpx.Response) -> None:
        """Parse the stream into (event, id, data) on a queue (pings skipped); None at its end."""
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    event = (
                        fields.get("event", "message"),
                        fields["id"],
                        json.loads(fields["data"]),
                    )
                    self._events.put_nowait(event)
                fields = {}
            elif not line.startswith(":"):  # ":" starts a comment (a ping)
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
        self._events.put_nowait(None)

    async def next(self, deadline: float = 10.0) -> tuple[str, str, dict]:
        async with asyncio.timeout(deadline):
            event = await self._events.get()
        assert event is not None, "stream ended"
        return event

    async def quiet(self, seconds: float = 1.0) -> None:
        """Nothing (else) arrives within `seconds`."""
        with contextlib.suppress(TimeoutError):
            got = await self.next(seconds)
            raise AssertionError(f"unexpected {got}")


async def write(live: Live, *readings: tuple[str, str, int, float]) -> None:
    """Through the real writer: (device, quantity, minute after T0, value)."""
    rows = [Reading(live.ids[d], q, T0 + timedelta(minutes=m), v, 0) for d, q, m, v in readings]
    result = await ReadingWriter(live.db).write_batch(rows)
    assert result.written == len(rows)


async def test_a_reading_written_appears(live):
    async with Stream(live) as s:
        kind, first_id, _ = await s.next()
        assert kind == "ready"
        await write(live, ("m1", "1.8.0", 0, 12.5))
        kind, event_id, data = await s.next()
    assert kind == "reading"
    assert data == {
        "device": "m1",
        "quantity": "1.8.0",
        "ts": T0.isoformat(),
        "value": 12.5,
        "quality": 0,
    }
    epoch, seq = event_id.split("-")
    assert first_id.split("-")[0] == epoch and int(seq) > int(first_id.split("-")[1])


async def test_a_reconnect_gets_exactly_the_missed_events(live):
    async with Stream(live) as s:
        await s.next()
        await write(live, ("m1", "1.8.0", 0, 1.0))
        _, last, data = await s.next()
        assert data["value"] == 1.0
    # disconnected: three readings are stored meanwhile, in two batches
    await write(live, ("m1", "1.8.0", 1, 2.0), ("m2", "1.8.0", 1, 3.0))
    await write(live, ("m1", "1.8.0", 2, 4.0))
    feed = live.app.state.live
    async with asyncio.timeout(10):
        while feed.newest() < int(last.split("-")[1]) + 3:
            await asyncio.sleep(0.02)
    async with Stream(live, last=last) as s:
        assert (await s.next())[:2] == ("ready", last)  # resumed from where it was
        missed = [await s.next() for _ in range(3)]
        await s.quiet()
        await write(live, ("m2", "1.8.0", 2, 5.0))  # and then live ones
        _, _, data = await s.next()
    assert [(k, d["device"], d["value"]) for k, _, d in missed] == [
        ("reading", "m1", 2.0),
        ("reading", "m2", 3.0),
        ("reading", "m1", 4.0),
    ]
    ids = [int(i.split("-")[1]) for _, i, _ in missed]
    assert ids == sorted(ids) and ids[0] > int(last.split("-")[1])
    assert data["value"] == 5.0


async def test_outside_the_window_a_reset_is_sent(migrated_url):
    ids = seed(migrated_url)
    async with serve(migrated_url, LivePolicy(max_items=3)) as live:
        live.ids, live.headers = ids, credentials(migrated_url, "viewer")
        async with Stream(live) as s:
            _, last, _ = await s.next()
        # 5 readings while away; the feed keeps 3: the client's next one is gone
        await write(live, *[("m1", "1.8.0", m, float(m)) for m in range(5)])
        feed = live.app.state.live
        async with asyncio.timeout(10):
            while feed.newest() < int(last.split("-")[1]) + 5:
                await asyncio.sleep(0.02)
        async with Stream(live, last=last) as s:
            kind, reset_id, data = await s.next()
            assert kind == "reset" and "no longer kept" in data["reason"]
            await write(live, ("m1", "1.8.0", 9, 9.0))  # live events follow the reset
            kind, _, data = await s.next()
            assert (kind, data["value"]) == ("reading", 9.0)
        # an id of another feed (an API restarted since) is a reset too, never a silent gap
        async with Stream(live, last=f"1-{reset_id.split('-')[1]}") as s:
            kind, _, data = await s.next()
            assert kind == "reset" and "not from this feed" in data["reason"]


async def test_filters_by_device_area_quantity_and_kind(live, collector_store):
    async with (
        Stream(live, {"area": "a1"}) as area,
        Stream(live, {"device": "m3,m2", "quantity": "32.7.0"}) as dev,
        Stream(live, {"kind": "alarm,event"}) as alarms,
    ):
        for s in (area, dev, alarms):
            assert (await s.next())[0] == "ready"
        await write(
            live,
            ("m0", "1.8.0", 0, 1.0),  # left a1 before now: not in force
            ("m1", "1.8.0", 0, 2.0),
            ("m2", "32.7.0", 0, 231.0),
            ("m3", "32.7.0", 0, 229.0),
            ("m3", "1.8.0", 0, 3.0),
        )
        await collector_store.add_events(
            [
                Event(live.ids["m1"], T0, "cover_open", {"count": 1}),  # an alarm kind
                Event(live.ids["m3"], T0, "clock_drift", {"seconds": 90}),
            ]
        )
        got_area = [await area.next() for _ in range(3)]
        got_dev = [await dev.next() for _ in range(2)]
        got_alarms = [await alarms.next() for _ in range(2)]
        for s in (area, dev, alarms):
            await s.quiet(0.5)
    assert sorted((k, d["device"], d.get("value", d.get("kind"))) for k, _, d in got_area) == [
        ("alarm", "m1", "cover_open"),
        ("reading", "m1", 2.0),
        ("reading", "m2", 231.0),
    ]
    assert [(d["device"], d["value"]) for _, _, d in got_dev] == [("m2", 231.0), ("m3", 229.0)]
    assert [(k, d["device"], d["kind"]) for k, _, d in got_alarms] == [
        ("alarm", "m1", "cover_open"),
        ("event", "m3", "clock_drift"),
    ]


async def test_bad_requests_are_refused_in_one_line(live):
    async with httpx.AsyncClient(base_url=live.url) as client:
        cases = [
            ({"device": "nope"}, live.headers, 404, "no such device: nope"),
            ({"area": "nowhere"}, live.headers, 404, "no such area: nowhere"),
            ({"kind": "reading,gossip"}, live.headers, 422, "['gossip']: expected reading"),
            ({"quantity": "9.9.9"}, live.headers, 422, "unknown quantity 9.9.9"),
            ({}, {}, 401, None),
        ]
        for params, headers, status, detail in cases:
            r = await client.get("/live/stream", params=params, headers=headers)
            assert r.status_code == status, (params, r.text)
            if detail:
                assert detail in str(r.json()["detail"])
        r = await client.get("/live")  # the page itself is open
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]


async def test_closing_the_feed_ends_every_stream(live):
    """What `gridread run` does before stopping the API: open streams end, so uvicorn's
    graceful shutdown does not wait on them."""
    async with Stream(live) as s, Stream(live, {"area": "a1"}) as t:
        assert (await s.next())[0] == (await t.next())[0] == "ready"
        live.app.state.live.close()
        for stream in (s, t):
            with pytest.raises(AssertionError, match="stream ended"):
                await stream.next()


async def test_a_lost_listen_connection_is_a_reset_not_a_silent_gap(live):
    """Notifications sent while the feed reconnects are lost to it: its clients are told."""
    async with Stream(live) as s:
        assert (await s.next())[0] == "ready"
        feed = live.app.state.live
        with psycopg.connect(live.db, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN gridread_live%%' AND pid <> pg_backend_pid()"
            )
        kind, _, data = await s.next(deadline=20)
        assert (kind, data) == ("reset", {"reason": "the feed reconnected"})
        async with asyncio.timeout(20):
            await feed.listening.wait()
        await write(live, ("m1", "1.8.0", 0, 7.0))
        kind, _, data = await s.next()
        assert (kind, data["value"]) == ("reading", 7.0)


async def test_items_older_than_the_window_are_not_replayed(migrated_url):
    """The window's time bound: an item older than max_age is gone (a reset), however few
    items there are. Arrival times are set back instead of waiting."""
    from api.live import LiveFeed, Reset

    feed = LiveFeed(migrated_url, LivePolicy(max_items=100, max_age=60))
    for k in range(3):
        feed._append("reading", 1, "1.8.0", {"k": k})
    assert feed.cursor_of(feed.event_id(0)) == 0  # all three still kept
    feed._items[0].at -= 61  # the first arrived 61 s ago
    with pytest.raises(Reset, match="no longer kept"):
        feed.cursor_of(feed.event_id(0))
    assert feed.cursor_of(feed.event_id(1)) == 1  # the second and third are still there
