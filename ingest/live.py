"""The live feed's source: what is stored is announced with pg_notify on `CHANNEL`, in the
transaction that stores it (delivered on commit, in commit order; nothing for a rollback).

Payloads are compact JSON, each ≤ `MAX_PAYLOAD` bytes (PostgreSQL's limit is 8000), so a
batch is announced in chunks, all in one statement:

* readings ``{"r": [[device_id, quantity, ts (Unix s), value, quality], …]}``
* events   ``{"e": [[device_id, ts, kind, detail], …]}`` (a detail too big for one payload
  is replaced by ``{"truncated": true}``: the event itself is never dropped)
* cases    ``{"c": [[case_id, device_id, kind, area, score], …]}`` (opened inspection cases)

The API (api/live.py) listens and parses them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

CHANNEL = "gridread_live"
MAX_PAYLOAD = 7900
# one statement per payload, sent with executemany (pipelined): ~4× cheaper on the server
# than one pg_notify over unnest(text[]) of the same payloads (measured)
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', %s)"
# "too many notifications in the NOTIFY queue" (a listener stopped reading for long)
QUEUE_FULL_STATE = "54000"

_CHUNK = 80  # readings per payload to try first; split further when bigger


def _finite(v: Any) -> Any:
    return v if isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)) else None


def _payloads(key: str, items: list[list[Any]]) -> list[str]:
    """`items` under `key`, in as few payloads of at most MAX_PAYLOAD bytes as chunking by
    `_CHUNK` and halving allows (a single item too big is the caller's to shrink)."""
    out: list[str] = []
    pending = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    pending.reverse()
    while pending:
        part = pending.pop()
        text = json.dumps({key: part}, separators=(",", ":"), allow_nan=False, default=str)
        if len(text.encode()) <= MAX_PAYLOAD or len(part) == 1:
            out.append(text)
        else:
            mid = len(part) // 2
            pending += [part[mid:], part[:mid]]
    return out


def notify(conn: psycopg.Connection, payloads: list[str]) -> None:
    """Send `payloads` in `conn`'s transaction (delivered at its commit)."""
    with conn.cursor() as cur:
        cur.executemany(NOTIFY_SQL, [(p,) for p in payloads])


async def anotify(conn: psycopg.AsyncConnection, payloads: list[str]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(NOTIFY_SQL, [(p,) for p in payloads])


def reading_payloads(rows: Sequence[tuple[int, str, datetime, float, int]]) -> list[str]:
    """Rows as the writer stores them → notification payloads (non-finite values as null).

    On the writer's path for every row: items are formatted directly (a batch has few
    distinct times and quantities, each converted once), ~3× faster than json.dumps."""
    times: dict[datetime, str] = {}
    codes: dict[str, str] = {}
    items: list[str] = []
    add = items.append
    for d, q, ts, v, ql in rows:
        t = times.get(ts)
        if t is None:
            t = times[ts] = repr(ts.timestamp())
        c = codes.get(q)
        if c is None:
            c = codes[q] = json.dumps(q)
        if type(v) is not float or not math.isfinite(v):
            v = json.dumps(_finite(v))
        add(f"[{d},{c},{t},{v!r},{ql}]" if type(v) is float else f"[{d},{c},{t},{v},{ql}]")
    return _pack("r", items)


def _pack(key: str, items: list[str]) -> list[str]:
    """JSON texts of items → as few `{"key":[…]}` payloads of ≤ MAX_PAYLOAD bytes as fit."""
    head, room = f'{{"{key}":[', MAX_PAYLOAD - len(key) - 8
    out: list[str] = []
    part: list[str] = []
    size = 0
    for item in items:
        n = len(item) + 1  # ASCII: the codes are json.dumps'd (ensure_ascii)
        if part and size + n > room:
            out.append(head + ",".join(part) + "]}")
            part, size = [], 0
        part.append(item)
        size += n
    if part:
        out.append(head + ",".join(part) + "]}")
    return out


def event_payloads(events: Iterable[tuple[int, datetime, str, Any]]) -> list[str]:
    """(device_id, ts, kind, detail) → payloads; `detail` a dict or its JSON text."""
    items = []
    for device_id, ts, kind, detail in events:
        if isinstance(detail, str):
            detail = json.loads(detail)
        item = [device_id, ts.timestamp(), kind, detail]
        if len(json.dumps(item, default=str)) > MAX_PAYLOAD - 16:
            item[3] = {"truncated": True}
        items.append(item)
    return _payloads("e", items)


def case_payloads(cases: Iterable[tuple[int, int, str, str | None, float]]) -> list[str]:
    """(case_id, device_id, kind, area, score) of newly opened inspection cases → payloads."""
    return _payloads("c", [list(c) for c in cases])
