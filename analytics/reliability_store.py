"""Loads what the reliability job needs for a window into arrays: the customers and where
they are, the interruption records by scope, the outage notices.

Scope of a record, by the device that made it:
* a customer's meter (metering point role ``customer``, or the ``area_total`` of a dedicated
  area, which is its customer's meter): that customer;
* a public area's total meter, or a device whose ``attributes`` name an ``area`` (a
  concentrator, a voltage monitor): every customer of that area;
* a feeder-head meter, or a device whose ``attributes`` name a ``feeder``: every customer of
  the feeder's areas.
Each device's placement is its latest metering point overlapping the window. Records of a
device placed nowhere, or ending before they start, are counted and reported, not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from analytics import pgbinary
from analytics.reliability import Kind

KIND_NAMES = ("unplanned", "planned", "limited")  # analytics.reliability.Kind


@dataclass
class Records:
    owner: np.ndarray  # customer, area or feeder index
    start: np.ndarray  # int64
    end: np.ndarray  # float64, NaN: open

    @classmethod
    def empty(cls) -> Records:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


@dataclass
class ReliabilityInput:
    customer_ids: np.ndarray  # (n,) device ids
    customer_area: np.ndarray  # (n,) area index
    area_names: list[str]
    area_feeder: np.ndarray  # (A,) feeder index
    feeder_names: list[str]
    customers: Records = field(default_factory=Records.empty)
    areas: Records = field(default_factory=Records.empty)
    feeders: Records = field(default_factory=Records.empty)
    notice_area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    notice_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    notice_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    notice_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    unplaced: int = 0  # records of devices placed nowhere
    refused: int = 0  # records ending before they start
    stray_notices: list[str] = field(default_factory=list)  # notices of unknown groups


# Per device its scope (0 customer, 1 area, 2 feeder) and the area's or feeder's id: its
# latest metering point overlapping the window, else the area / feeder its attributes name.
_PLACEMENT = """
COPY (SELECT DISTINCT ON (device_id) device_id, scope, group_id FROM (
    SELECT mp.device_id, 0 AS prio, mp.valid_from,
           (CASE WHEN mp.role = 'customer' OR a.kind = 'dedicated' THEN 0
                 WHEN mp.role = 'area_total' THEN 1 ELSE 2 END)::int2 AS scope,
           COALESCE(mp.area_id, mp.feeder_id)::int4 AS group_id
    FROM metering_points mp LEFT JOIN areas a ON a.id = mp.area_id
    WHERE mp.valid_from < to_timestamp({hi})
      AND (mp.valid_to IS NULL OR mp.valid_to > to_timestamp({lo}))
    UNION ALL
    SELECT d.id, 1, '-infinity', (CASE WHEN a.id IS NOT NULL THEN 1 ELSE 2 END)::int2,
           COALESCE(a.id, f.id)::int4
    FROM devices d
    LEFT JOIN areas a ON a.name = d.attributes->>'area'
    LEFT JOIN feeders f ON f.name = d.attributes->>'feeder'
    WHERE d.kind <> 'meter' AND (a.id IS NOT NULL OR f.id IS NOT NULL)
) p ORDER BY device_id, prio, valid_from DESC) TO STDOUT (FORMAT BINARY)
"""

_EVENTS = """
COPY (SELECT e.device_id, floor(extract(epoch FROM e.ts))::int8,
             COALESCE(extract(epoch FROM (e.detail->>'end')::timestamptz)::float8, 'NaN'),
             (e.kind = ANY({group}))::int::int2
      FROM events e
      WHERE e.kind = ANY({kinds}) AND e.ts >= to_timestamp({lo}) AND e.ts < to_timestamp({hi})
) TO STDOUT (FORMAT BINARY)
"""


def load_events(
    conn: psycopg.Connection, customer_kinds: list[str], group_kinds: list[str], lo: int, hi: int
) -> list[np.ndarray]:
    """(device_id, start, end, is_group) of the events of those kinds starting in [lo, hi),
    in one scan, by binary COPY."""
    stmt = sql.SQL(_EVENTS).format(
        kinds=sql.Literal([*customer_kinds, *group_kinds]),
        group=sql.Literal(list(group_kinds)),
        lo=sql.Literal(lo),
        hi=sql.Literal(hi),
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        data = b"".join(bytes(block) for block in copy)
    return pgbinary.decode(data, ["int4", "int8", "float8", "int2"])


def load_input(
    conn: psycopg.Connection,
    lo: int,
    hi: int,
    *,
    customer_events: list[str],
    group_events: list[str],
) -> ReliabilityInput:
    """Everything for records starting in [lo, hi) (unix seconds)."""
    feeders = conn.execute("SELECT id, name FROM feeders ORDER BY id").fetchall()
    areas = conn.execute("SELECT id, name, feeder_id FROM areas ORDER BY id").fetchall()
    feeder_ids = np.array([f[0] for f in feeders], dtype=np.int64)
    area_ids = np.array([a[0] for a in areas], dtype=np.int64)
    area_feeder = np.searchsorted(feeder_ids, np.array([a[2] for a in areas], dtype=np.int64))
    area_by_name = {a[1]: i for i, a in enumerate(areas)}
    feeder_by_name = {f[1]: i for i, f in enumerate(feeders)}

    stmt = sql.SQL(_PLACEMENT).format(lo=sql.Literal(lo), hi=sql.Literal(hi))
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        data = b"".join(bytes(block) for block in copy)
    devs, scope, group_id = pgbinary.decode(data, ["int4", "int2", "int4"])
    devs = devs.astype(np.int64)  # sorted: DISTINCT ON orders by device
    index = np.where(
        scope == 2, np.searchsorted(feeder_ids, group_id), np.searchsorted(area_ids, group_id)
    )
    is_cust = scope == 0
    index[is_cust] = np.arange(int(is_cust.sum()))  # a customer: its row
    out = ReliabilityInput(
        customer_ids=devs[is_cust],
        customer_area=np.searchsorted(area_ids, group_id[is_cust]).astype(np.int64),
        area_names=[a[1] for a in areas],
        area_feeder=area_feeder,
        feeder_names=[f[1] for f in feeders],
    )
    dev, start, end, is_group = load_events(conn, customer_events, group_events, lo, hi)
    pos = np.clip(np.searchsorted(devs, dev), 0, max(devs.size - 1, 0))
    known = devs.size > 0
    hit = (devs[pos] == dev) if known else np.zeros(dev.size, dtype=bool)
    sc = np.where(hit, scope[pos] if known else -1, -1)
    hit &= (sc >= 0) & ~((is_group == 1) & (sc == 0))  # a group kind needs a group device
    bad = end < start  # NaN (open) compares False
    out.unplaced = int((~hit).sum())
    out.refused = int((hit & bad).sum())
    hit &= ~bad
    for s, name in ((0, "customers"), (1, "areas"), (2, "feeders")):
        m = hit & (sc == s)
        setattr(out, name, Records(index[pos[m]], start[m], end[m]))
    _notices(conn, out, lo, hi, area_by_name, feeder_by_name)
    return out


def _notices(conn, out: ReliabilityInput, lo: int, hi: int, area_by_name, feeder_by_name):
    """Notices overlapping the window, a feeder's repeated for each of its areas."""
    rows = conn.execute(
        'SELECT scope, name, kind, extract(epoch FROM start)::int8, extract(epoch FROM "end")::int8'
        ' FROM outage_notices WHERE start < to_timestamp(%s) AND "end" > to_timestamp(%s)',
        (hi, lo),
    ).fetchall()
    area, start, end, kind = [], [], [], []
    for scope, name, k, s, e in rows:
        if scope == "area" and name in area_by_name:
            targets = [area_by_name[name]]
        elif scope == "feeder" and name in feeder_by_name:
            targets = np.flatnonzero(out.area_feeder == feeder_by_name[name]).tolist()
        else:  # its area or feeder was renamed or removed since: reported, not used
            out.stray_notices.append(f"{scope} {name}")
            continue
        for a in targets:
            area.append(a)
            start.append(s)
            end.append(e)
            kind.append(Kind.PLANNED if k == "planned" else Kind.LIMITED)
    out.notice_area = np.array(area, dtype=np.int64)
    out.notice_start = np.array(start, dtype=np.int64)
    out.notice_end = np.array(end, dtype=np.int64)
    out.notice_kind = np.array(kind, dtype=np.int8)


def add_notice(
    conn: psycopg.Connection,
    scope: str,
    name: str,
    kind: str,
    start,
    end,
    reason: str | None = None,
) -> int:
    """Store an outage notice (planned 计划停电 / limited supply 限电) of an area or feeder;
    a clear error for an unknown group, kind or an empty window."""
    if scope not in ("area", "feeder") or kind not in ("planned", "limited"):
        raise ValueError(f"outage notice: scope {scope!r} / kind {kind!r} not known")
    table = "areas" if scope == "area" else "feeders"
    found = conn.execute(
        sql.SQL("SELECT 1 FROM {} WHERE name = %s").format(sql.Identifier(table)), (name,)
    ).fetchone()
    if found is None:
        raise ValueError(f"outage notice: no {scope} named {name!r}")
    if not end > start:
        raise ValueError(f"outage notice for {scope} {name}: end {end} not after start {start}")
    return conn.execute(
        'INSERT INTO outage_notices (scope, name, kind, start, "end", reason)'
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (scope, name, kind, start, end, reason),
    ).fetchone()[0]
