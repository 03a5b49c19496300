"""VEE's database side: load a block of days as arrays (binary COPY), write validated reads
as new versions where something changed, and a person's edit (audited).

Quantities as stored in ``validated_reads`` (migration 13): ``1.8.0`` the 15-min interval
energy starting at ``ts``; ``1.8.0*d`` … ``1.8.4*d`` the daily frozen registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from analytics import pgbinary
from analytics.energy import align_registers
from analytics.vee import Method, Rule
from analytics.vee_pipeline import VeeResult

PROFILE = "1.8.0"
FROZEN = ["1.8.0*d", "1.8.1*d", "1.8.2*d", "1.8.3*d", "1.8.4*d"]
REACTIVE = "3.8.0"  # reactive import Q+: its 15-min energy is validated like 1.8.0's
QUANTITIES = [PROFILE, *FROZEN, REACTIVE]  # the codes the COPY streams carry as an int2 index
METHODS = [m.name.lower() for m in Method]
_NP = {"int2": np.int16, "int4": np.int32, "int8": np.int64, "float8": np.float64}


class EditError(ValueError):
    """An edit that cannot be made (no such read, no reason, a bad value): one line."""


@dataclass(frozen=True)
class Block:
    """D local days of per_day intervals of `step` s from `start` for `device_ids`."""

    device_ids: np.ndarray
    start: int
    step: int
    per_day: int
    days: int
    registers: np.ndarray  # (n, T+1)
    quality: np.ndarray  # (n, T+1) ingest flags of the readings at the boundaries
    frozen: np.ndarray  # (n, D+1)
    frozen_quality: np.ndarray  # (n, D+1)
    tou: np.ndarray  # (n, 4, D+1)
    reactive: np.ndarray  # (n, T+1) 3.8.0 registers
    reactive_quality: np.ndarray  # (n, T+1)


def devices_with_reads(conn: psycopg.Connection, lo: int, hi: int) -> np.ndarray:
    """Devices with any energy register (profile or frozen) in [lo, hi]."""
    rows = conn.execute(
        "SELECT DISTINCT device_id FROM readings WHERE quantity = ANY(%s)"
        " AND ts >= to_timestamp(%s) AND ts <= to_timestamp(%s) ORDER BY 1",
        (QUANTITIES, lo, hi),
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def _copy_out(conn: psycopg.Connection, query: str, params: dict, types: list[str]) -> list:
    stmt = psycopg.sql.SQL(query).format(**{k: psycopg.sql.Literal(v) for k, v in params.items()})
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        data = b"".join(bytes(b) for b in copy)
    return pgbinary.decode(data, types)


def load_block(
    conn: psycopg.Connection,
    device_ids: np.ndarray,
    start: int,
    days: int,
    *,
    step: int = 900,
    tolerance: int = 300,
) -> Block:
    """The profile registers, frozen registers and TOU registers of `days` days from
    `start` (a local midnight; every day 86,400 s) with their ingest quality flags."""
    per_day = 86400 // step
    n, t = len(device_ids), days * per_day
    end = start + t * step
    idx, q_idx, ts, value, quality = _copy_out(
        conn,
        "COPY (SELECT (m.idx - 1)::int4, array_position({qs}::text[], r.quantity)::int2,"
        " floor(extract(epoch FROM r.ts))::int8, r.value, r.quality::int2"
        " FROM readings r JOIN unnest({ids}::int4[]) WITH ORDINALITY AS m(device_id, idx)"
        "   ON r.device_id = m.device_id"
        " WHERE r.quantity = ANY({qs}::text[])"
        "   AND r.ts >= to_timestamp({lo}) AND r.ts <= to_timestamp({hi})"
        ") TO STDOUT (FORMAT BINARY)",
        {
            "qs": QUANTITIES,
            "ids": [int(d) for d in device_ids],
            "lo": start - tolerance,
            "hi": end + tolerance,
        },
        ["int4", "int2", "int8", "float8", "int2"],
    )
    q_idx = q_idx - 1

    def on_boundaries(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # SUSPECT values go in too (VEE decides); only a NaN is no reading
        regs = align_registers(idx[mask], ts[mask], value[mask], n, start, step, t + 1, tolerance)
        qual = np.zeros((n, t + 1), dtype=np.int16)
        k = np.rint((ts[mask] - start) / step).astype(np.int64)
        near = (k >= 0) & (k <= t) & (np.abs(ts[mask] - (start + k * step)) <= tolerance)
        np.bitwise_or.at(qual, (idx[mask][near], k[near]), quality[mask][near])
        return regs, qual

    regs, qual = on_boundaries(q_idx == 0)
    reactive, reactive_q = on_boundaries(q_idx == len(FROZEN) + 1)
    frozen = np.full((5, n, days + 1), np.nan)
    fq = np.zeros((n, days + 1), dtype=np.int16)
    fz = (q_idx >= 1) & (q_idx <= len(FROZEN))
    fz &= ((ts - start) % 86400 == 0) & (ts >= start) & (ts <= end)
    d = (ts[fz] - start) // 86400
    frozen[q_idx[fz] - 1, idx[fz], d] = value[fz]
    total = q_idx[fz] == 1
    fq[idx[fz][total], d[total]] = quality[fz][total]
    return Block(
        device_ids=np.asarray(device_ids),
        start=start,
        step=step,
        per_day=per_day,
        days=days,
        registers=regs,
        quality=qual,
        frozen=frozen[0],
        frozen_quality=fq,
        tou=np.moveaxis(frozen[1:], 0, 1),
        reactive=reactive,
        reactive_quality=reactive_q,
    )


def overlay_edits(conn: psycopg.Connection, block: Block) -> int:
    """Put the edited frozen registers (current versions, method edited) of the block in
    place of what was read, so that a person's value takes part in the sum-check and the
    TOU check of the days around it; returns how many."""
    idx, q_idx, ts, value = _copy_out(
        conn,
        "COPY (SELECT (m.idx - 1)::int4, array_position({qs}::text[], v.quantity)::int2,"
        " floor(extract(epoch FROM v.ts))::int8, v.value"
        " FROM validated_reads v JOIN unnest({ids}::int4[]) WITH ORDINALITY AS m(device_id, idx)"
        "   ON v.device_id = m.device_id"
        " WHERE v.current AND v.method = 'edited' AND v.quantity = ANY({qs}::text[])"
        "   AND v.ts >= to_timestamp({lo}) AND v.ts <= to_timestamp({hi})"
        ") TO STDOUT (FORMAT BINARY)",
        {
            "qs": FROZEN,
            "ids": [int(d) for d in block.device_ids],
            "lo": block.start,
            "hi": block.start + block.days * 86400,
        },
        ["int4", "int2", "int8", "float8"],
    )
    d = (ts - block.start) // 86400
    total = q_idx == 1
    block.frozen[idx[total], d[total]] = value[total]
    block.frozen_quality[idx[total], d[total]] = 0
    tou = ~total
    block.tou[idx[tou], q_idx[tou] - 2, d[tou]] = value[tou]
    return len(idx)


def load_history(
    conn: psycopg.Connection,
    device_ids: np.ndarray,
    start: int,
    days: int,
    step: int = 900,
    quantity: str = PROFILE,
) -> np.ndarray:
    """Validated 15-min energy (n, days, per_day) of the `days` days before `start`; NaN
    where not validated (the same-day-type profile's input)."""
    per_day = 86400 // step
    lo = start - days * 86400
    idx, ts, value = _copy_out(
        conn,
        "COPY (SELECT (m.idx - 1)::int4, floor(extract(epoch FROM v.ts))::int8, v.value"
        " FROM validated_reads v JOIN unnest({ids}::int4[]) WITH ORDINALITY AS m(device_id, idx)"
        "   ON v.device_id = m.device_id"
        " WHERE v.quantity = {q} AND v.current AND v.valid AND v.value IS NOT NULL"
        "   AND v.ts >= to_timestamp({lo}) AND v.ts < to_timestamp({hi})"
        ") TO STDOUT (FORMAT BINARY)",
        {"ids": [int(d) for d in device_ids], "q": quantity, "lo": lo, "hi": start},
        ["int4", "int8", "float8"],
    )
    out = np.full((len(device_ids), days * per_day), np.nan)
    k = (ts - lo) // step
    out[idx, k] = value
    return out.reshape(len(device_ids), days, per_day)


def _days_seen(block: Block, regs: np.ndarray, frozen: np.ndarray | None) -> np.ndarray:
    """(n, D): the device has any reading in the day (a day before it was installed or
    after it was removed is not written)."""
    n = regs.shape[0]
    ok = np.isfinite(regs)
    seen = ok[:, :-1].reshape(n, block.days, block.per_day).any(axis=2)
    seen |= ok[:, block.per_day :: block.per_day]
    if frozen is not None:
        fz = np.isfinite(frozen)
        seen |= fz[:, :-1] | fz[:, 1:]
    return seen


def _interval_rows(block: Block, r: VeeResult, q: int, seen: np.ndarray) -> list[np.ndarray]:
    n, t = r.energy.shape
    keep = np.repeat(seen, block.per_day, axis=1).ravel()
    starts = block.start + np.arange(t, dtype=np.int64) * block.step
    ids = block.device_ids.astype(np.int32)
    cols = [np.repeat(ids, t), np.full(n * t, q, np.int16), np.tile(starts, n)]
    cols += [r.energy.ravel(), r.method.ravel(), r.rules.ravel(), r.valid.ravel()]
    return [c[keep] for c in cols]


def _frozen_rows(block: Block, r: VeeResult, seen: np.ndarray) -> list[np.ndarray]:
    n, d1 = r.frozen.shape
    keep = np.zeros((n, d1), dtype=bool)
    keep[:, :-1] |= seen
    keep[:, 1:] |= seen
    keep = np.repeat(keep[:, None, :], 5, axis=1).ravel()
    fts = block.start + np.arange(d1, dtype=np.int64) * 86400
    values = np.concatenate([r.frozen[:, None, :], r.tou], axis=1)  # (n, 5, D+1)
    tou_method = np.where(np.isnan(block.tou) & np.isfinite(r.tou), 1, 0)
    method = np.concatenate([r.frozen_method[:, None, :], tou_method], axis=1)
    tou_rules = np.where(tou_method == 1, int(Rule.TOU_REMAINDER), 0)
    tou_rules |= np.where(np.isnan(block.tou), int(Rule.GAP), 0)
    rules = np.concatenate([r.frozen_rules[:, None, :], tou_rules], axis=1)
    valid = np.concatenate(
        [r.frozen_valid[:, None, :], np.repeat(r.tou_valid[:, None, :], 4, axis=1)], axis=1
    )
    ids = block.device_ids.astype(np.int32)
    cols = [
        np.repeat(ids, 5 * d1),
        np.tile(np.repeat(np.arange(1, 6, dtype=np.int16), d1), n),
        np.tile(fts, n * 5),
    ]
    cols += [values.ravel(), method.ravel(), rules.ravel(), valid.ravel()]
    return [c[keep] for c in cols]


def write_result(
    conn: psycopg.Connection, block: Block, r: VeeResult, reactive: VeeResult | None = None
) -> int:
    """Write the block's validated reads (and the reactive energy's, if given) as new
    versions where value, method, rules or validity changed (an edited current value is
    left alone); return the rows written."""
    seen = _days_seen(block, block.registers, block.frozen)
    parts = [_interval_rows(block, r, 0, seen), _frozen_rows(block, r, seen)]
    if reactive is not None:
        q = QUANTITIES.index(REACTIVE)
        parts.append(_interval_rows(block, reactive, q, _days_seen(block, block.reactive, None)))
    types = ["int4", "int2", "int8", "float8", "int2", "int4", "int2"]
    data = pgbinary.encode(
        [(np.concatenate([p[i] for p in parts]).astype(_NP[k]), k) for i, k in enumerate(types)]
    )
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS vee_new (device_id int4, q int2, ts int8,"
        " value float8, method int2, rules int4, valid int2) ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE vee_new")
    with conn.cursor() as cur, cur.copy("COPY vee_new FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(data)
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS vee_changed (device_id int4, quantity text,"
        " ts timestamptz, version int4, value float8, method text, rules int4, valid bool)"
        " ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE vee_changed")
    conn.execute(
        "INSERT INTO vee_changed"
        " SELECT n.device_id, (%(qs)s::text[])[n.q + 1], to_timestamp(n.ts),"
        "  coalesce(c.version, 0) + 1, NULLIF(n.value, 'NaN'), (%(ms)s::text[])[n.method + 1],"
        "  n.rules, n.valid = 1"
        " FROM vee_new n LEFT JOIN validated_reads c ON c.current"
        "  AND c.device_id = n.device_id AND c.quantity = (%(qs)s::text[])[n.q + 1]"
        "  AND c.ts = to_timestamp(n.ts)"
        " WHERE c.device_id IS NULL OR (c.method <> 'edited' AND ("
        "  c.value IS DISTINCT FROM NULLIF(n.value, 'NaN')"
        "  OR c.method <> (%(ms)s::text[])[n.method + 1] OR c.rules <> n.rules"
        "  OR c.valid <> (n.valid = 1)))",
        {"qs": QUANTITIES, "ms": METHODS},
    )
    conn.execute(
        "UPDATE validated_reads v SET current = false FROM vee_changed c"
        " WHERE v.current AND v.device_id = c.device_id AND v.quantity = c.quantity"
        "  AND v.ts = c.ts"
    )
    cur = conn.execute(
        "INSERT INTO validated_reads (device_id, quantity, ts, version, value, method, rules,"
        " valid) SELECT device_id, quantity, ts, version, value, method, rules, valid"
        " FROM vee_changed"
    )
    return cur.rowcount


def edit_read(
    conn: psycopg.Connection,
    *,
    device_id: int,
    quantity: str,
    ts: datetime,
    value: float,
    actor: str,
    reason: str,
) -> dict:
    """A person's value for a validated read: a new version (method edited, valid), the
    previous kept, an ``audit_log`` row with both. Returns the new version."""
    if not reason or not reason.strip():
        raise EditError("an edit needs a reason")
    if not actor or not actor.strip():
        raise EditError("an edit needs the name of who makes it")
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise EditError(f"value must be a finite number ≥ 0 (got {value!r})")
    with conn.transaction():
        row = conn.execute(
            "SELECT version, value, method, rules, valid FROM validated_reads"
            " WHERE device_id = %s AND quantity = %s AND ts = %s AND current FOR UPDATE",
            (device_id, quantity, ts),
        ).fetchone()
        if row is None:
            raise EditError(f"no validated read of device {device_id} {quantity} at {ts}")
        version, old, method, rules, valid = row
        conn.execute(
            "UPDATE validated_reads SET current = false"
            " WHERE device_id = %s AND quantity = %s AND ts = %s AND current",
            (device_id, quantity, ts),
        )
        conn.execute(
            "INSERT INTO validated_reads (device_id, quantity, ts, version, value, method,"
            " rules, valid, edited_by, reason) VALUES (%s, %s, %s, %s, %s, 'edited', %s, true,"
            " %s, %s)",
            (device_id, quantity, ts, version + 1, float(value), rules, actor, reason),
        )
        before = {"version": version, "value": old, "method": method, "valid": valid}
        after = {"version": version + 1, "value": float(value), "method": "edited"}
        after["reason"] = reason
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
            " VALUES (%s, 'edit', 'validated_read', %s, %s, %s)",
            (actor, f"{device_id}/{quantity}/{ts.isoformat()}", Jsonb(before), Jsonb(after)),
        )
    return {"version": version + 1, "value": float(value), "method": "edited", "rules": rules}
