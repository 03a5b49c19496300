"""The live feed: one LISTEN connection per app, a ring buffer of what was announced, and a
cursor per client over it.

Every announced reading, event or opened case becomes an `Item` with the next sequence
number. The buffer keeps the last `max_items` items and none older than `max_age` seconds.
A client follows it from a cursor (the last sequence number it has): it gets every later item
that matches its filter, and when its cursor has fallen out of the buffer (it was away or
slow for longer than the window) it gets an explicit `reset` instead of a silent gap. When
the LISTEN connection is lost, notifications may have been missed: a `gap` item is put in
the buffer and every client reaching it gets a `reset` too.

Event ids are ``<epoch>-<seq>``: `epoch` names this feed (its start, in µs), so an id from
another process (a restarted API) is recognised as outside the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from ingest.live import CHANNEL

log = logging.getLogger(__name__)

KINDS = ("reading", "event", "alarm")


@dataclass(frozen=True, slots=True)
class LivePolicy:
    """The live feed's settings (gridread/settings.py, `live_*`)."""

    max_items: int = 20_000
    max_age: float = 300.0
    alarm_kinds: frozenset[str] = frozenset(
        {"power_down", "cover_open", "outage", "voltage_loss", "relay_operated"}
    )
    area_refresh: float = 60.0
    # for the live page's voltage chart (settings pq_voltage_limits, nominal_voltage)
    voltage_limits: tuple[tuple[float, float, float], ...] = (
        (220.0, 7.0, -10.0),
        (380.0, 7.0, -7.0),
        (10000.0, 7.0, -7.0),
        (35000.0, 5.0, -5.0),
    )
    nominal_voltage: float = 220.0
    # a stream holds no database connection; these bound what a caller can hold open
    streams_per_caller: int = 4
    recheck: float = 30.0  # seconds between re-checking an open stream's credentials


@dataclass(slots=True)
class Item:
    seq: int
    at: float  # monotonic time it arrived
    kind: str  # reading | event | alarm | gap
    device_id: int | None
    quantity: str | None
    data: dict[str, Any]
    _json: str | None = field(default=None, repr=False)

    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"), default=str)
        return self._json


@dataclass(frozen=True, slots=True)
class Filter:
    """What a client wants: None means any. `devices` are ids (an area resolved to its
    meters in force is a set of ids too: the intersection of both when both are given)."""

    devices: frozenset[int] | None = None
    quantities: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    def __call__(self, item: Item) -> bool:
        if item.kind == "gap":
            return True
        if self.kinds is not None and item.kind not in self.kinds:
            return False
        if self.devices is not None and item.device_id not in self.devices:
            return False
        return self.quantities is None or item.quantity in self.quantities


class Reset(Exception):
    """The client's cursor is not in the window any more: it must re-read state."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class LiveFeed:
    def __init__(self, conninfo: str, policy: LivePolicy | None = None) -> None:
        self.conninfo = conninfo
        self.policy = policy or LivePolicy()
        self.epoch = time.time_ns() // 1000
        self._items: deque[Item] = deque(maxlen=self.policy.max_items)
        self._next = 1
        self._names: dict[int, str] = {}
        self._new = asyncio.Event()
        self.listening = asyncio.Event()  # set while LISTEN is in place
        self.stopped = False
        self.closing = False  # set by close(): every stream ends
        self.streams: Counter[str] = Counter()  # open streams per user name

    # -- ids ---------------------------------------------------------------------------

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def cursor_of(self, last_event_id: str | None) -> int:
        """The cursor a client resumes from: the seq of its Last-Event-ID; Reset if it is
        not this feed's or no longer in the window; no id → the newest (live only)."""
        if not last_event_id:
            return self._next - 1
        epoch, _, seq = last_event_id.strip().partition("-")
        if epoch != str(self.epoch) or not seq.isdigit():
            raise Reset("Last-Event-ID is not from this feed (the API restarted?)")
        cursor = int(seq)
        if cursor >= self._next:
            raise Reset("Last-Event-ID is ahead of this feed")
        self._check(cursor)
        return cursor

    def _check(self, cursor: int) -> None:
        self._evict()
        first = self._items[0].seq if self._items else self._next
        if cursor < first - 1:
            raise Reset(f"events after {self.event_id(cursor)} are no longer kept")

    # -- the buffer ----------------------------------------------------------------------

    def _append(self, kind: str, device_id: int | None, quantity: str | None, data: dict) -> None:
        self._items.append(Item(self._next, time.monotonic(), kind, device_id, quantity, data))
        self._next += 1

    def _evict(self) -> None:
        limit = time.monotonic() - self.policy.max_age
        items = self._items
        while items and items[0].at < limit:
            items.popleft()

    def _wake(self) -> None:
        self._new.set()
        self._new = asyncio.Event()

    def close(self) -> None:
        """End every stream (the server is stopping: uvicorn waits for open responses)."""
        self.closing = True
        self._wake()

    async def follow(self, cursor: int, accept: Filter) -> AsyncIterator[Item]:
        """Items after `cursor` that `accept` takes, until `close()`; raises Reset when the
        cursor falls out of the window (the caller sends `reset` and follows from the newest)."""
        while not self.closing:
            self._check(cursor)
            items = self._items
            start = cursor + 1 - items[0].seq if items else 0
            batch = [i for i in itertools.islice(items, max(start, 0), None)]
            if not batch:
                await self._new.wait()
                continue
            for item in batch:
                cursor = item.seq
                if item.kind == "gap":
                    raise Reset(item.data["reason"])
                if accept(item):
                    yield item
            # between yields the buffer may have moved on: checked at the loop's top

    def newest(self) -> int:
        return self._next - 1

    # -- the source ----------------------------------------------------------------------

    async def run(self) -> None:
        """LISTEN and fill the buffer until cancelled; reconnect (with a gap) on loss."""
        first = True
        while True:
            try:
                connect = psycopg.AsyncConnection.connect
                # notifies() holds its connection: device names are looked up on another
                async with (
                    await connect(self.conninfo, autocommit=True) as conn,
                    await connect(self.conninfo, autocommit=True) as lookup,
                ):
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._load_names(lookup)
                    if not first:
                        self._append("gap", None, None, {"reason": "the feed reconnected"})
                        self._wake()
                    first = False
                    self.listening.set()
                    async for note in conn.notifies():
                        await self._ingest(lookup, note.payload)
            except asyncio.CancelledError:
                self.stopped = True
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning("live feed: LISTEN connection lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _load_names(self, conn: psycopg.AsyncConnection, ids: Collection[int] = ()) -> None:
        if ids:
            cur = await conn.execute(
                "SELECT id, name FROM devices WHERE id = ANY(%s)", (list(ids),)
            )
        else:
            cur = await conn.execute("SELECT id, name FROM devices")
        self._names.update(await cur.fetchall())

    def _name(self, device_id: int) -> str:
        return self._names.get(device_id, str(device_id))

    async def _ingest(self, conn: psycopg.AsyncConnection, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.error("live feed: unreadable notification %.80r", payload)
            return
        ids = {r[0] for r in message.get("r", ())} | {e[0] for e in message.get("e", ())}
        ids |= {c[1] for c in message.get("c", ())}
        unknown = ids - self._names.keys()
        if unknown:
            with contextlib.suppress(psycopg.Error):
                await self._load_names(conn, unknown)
        for device_id, quantity, ts, value, quality in message.get("r", ()):
            data = {
                "device": self._name(device_id),
                "quantity": quantity,
                "ts": _iso(ts),
                "value": value,
                "quality": quality,
            }
            self._append("reading", device_id, quantity, data)
        alarms = self.policy.alarm_kinds
        for device_id, ts, kind, detail in message.get("e", ()):
            data = {"device": self._name(device_id), "ts": _iso(ts), "kind": kind}
            data["detail"] = detail
            self._append("alarm" if kind in alarms else "event", device_id, None, data)
        for case_id, device_id, kind, area, score in message.get("c", ()):
            data = {
                "device": self._name(device_id),
                "kind": "case_opened",
                "case": case_id,
                "case_kind": kind,
                "area": area,
                "score": score,
            }
            self._append("alarm", device_id, None, data)
        self._evict()
        self._wake()
