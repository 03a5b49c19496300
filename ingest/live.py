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

CHANNEL = "gridread_live"
MAX_PAYLOAD = 7900
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', p) FROM unnest(%s::text[]) AS p"
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


def reading_payloads(rows: Sequence[tuple[int, str, datetime, float, int]]) -> list[str]:
    """Rows as the writer stores them → notification payloads (non-finite values as null)."""
    items = [[d, q, ts.timestamp(), _finite(v), ql] for d, q, ts, v, ql in rows]
    return _payloads("r", items)


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
