"""The VEE job: validated 15-min and daily reads, incrementally by local day.

Each run takes the whole local days that ended ``settle_s`` ago and are not done yet (the
watermark ``analytics_watermarks.done_until``, job ``vee``), plus the last ``reread_days``
days again (late data: re-reads 补抄, frozen registers read the next morning). Unchanged
values write nothing; changed ones a new version. The same-day-type profile comes from the
validated reads of the ``profile_days`` days before each block. One transaction per run,
under an advisory lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from analytics.vee import DEFAULT_POLICY, VeePolicy
from analytics.vee_estimate import day_type_profile
from analytics.vee_pipeline import run_vee_block
from analytics.vee_store import (
    QUANTITIES,
    REACTIVE,
    devices_with_reads,
    load_block,
    load_history,
    overlay_edits,
    write_result,
)

JOB = "vee"
_LOCK_KEY = 0x5645_4501  # "VEE" 1


@dataclass(frozen=True)
class VeeJobPolicy:
    vee: VeePolicy = DEFAULT_POLICY
    timezone: str = "Asia/Shanghai"
    settle_s: int = 1800  # a day is validated once this long past its end
    reread_days: int = 3  # days before the watermark validated again each run
    profile_days: int = 28  # validated history the same-day-type profile averages
    weekend: tuple[int, ...] = (5, 6)  # ISO weekday − 1 of the "weekend" day type
    align_tolerance_s: int = 300
    max_step: float = 10_000.0  # secondary kWh per 15 min above which: a spike
    modulus: float = 1_000_000.0  # registers wrap here (XXXXXX.XX kWh); inf: never
    block_days: int = 7  # days loaded and validated at once
    meter_chunk: int = 5000  # meters loaded and validated at once (bounded memory)


@dataclass
class VeeSummary:
    days: list[date] = field(default_factory=list)
    rows: int = 0
    reasons: list[str] = field(default_factory=list)


def _midnight(day: date, zone: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())


def run_vee(conn: psycopg.Connection, policy: VeeJobPolicy, now: datetime) -> VeeSummary:
    """One incremental run; returns the days validated and the rows written."""
    zone = ZoneInfo(policy.timezone)
    summary = VeeSummary()
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            summary.reasons.append("another runner holds the lock")
            return summary
        last = (now - timedelta(seconds=policy.settle_s)).astimezone(zone).date()
        row = conn.execute(
            "SELECT done_until, topology->>'first' FROM analytics_watermarks WHERE job = %s",
            (JOB,),
        ).fetchone()
        if row is not None:  # never before the first day there was anything to validate
            first = max(
                row[0].astimezone(zone).date() - timedelta(days=policy.reread_days),
                date.fromisoformat(row[1]),
            )
            origin = row[1]
        else:
            (earliest,) = conn.execute(
                "SELECT min(ts) FROM readings WHERE quantity = ANY(%s)", (QUANTITIES,)
            ).fetchone()
            if earliest is None:
                summary.reasons.append("no energy registers yet")
                return summary
            first = earliest.astimezone(zone).date()
            origin = first.isoformat()
        days = [first + timedelta(days=k) for k in range((last - first).days)]
        for block in _blocks(days, zone, policy.block_days, summary):
            summary.rows += _validate(conn, policy, block, zone)
            summary.days += block
        if days:
            conn.execute(
                "INSERT INTO analytics_watermarks (job, done_until, topology, updated_at)"
                " VALUES (%s, %s, %s, now()) ON CONFLICT (job) DO UPDATE"
                " SET done_until = GREATEST(analytics_watermarks.done_until,"
                "  EXCLUDED.done_until), updated_at = now()",
                (JOB, datetime.fromtimestamp(_midnight(last, zone), UTC), Jsonb({"first": origin})),
            )
    return summary


def _blocks(days: list[date], zone: ZoneInfo, size: int, summary: VeeSummary) -> list:
    """Runs of at most `size` consecutive 24-hour local days (a DST day of 23 or 25 hours
    is reported, not validated: the 96-interval day is what the core assumes)."""
    out: list[list[date]] = []
    for day in days:
        length = _midnight(day + timedelta(days=1), zone) - _midnight(day, zone)
        if length != 86400:
            summary.reasons.append(f"{day}: a {length / 3600:g}-hour day is not validated")
            out.append([])
            continue
        if not out or len(out[-1]) >= size:
            out.append([])
        out[-1].append(day)
    return [b for b in out if b]


def _validate(conn: psycopg.Connection, policy: VeeJobPolicy, days: list[date], zone) -> int:
    start = _midnight(days[0], zone)
    end = start + len(days) * 86400
    all_ids = devices_with_reads(conn, start, end)
    written = 0
    for lo in range(0, len(all_ids), policy.meter_chunk):  # a loop per chunk of meters
        ids = all_ids[lo : lo + policy.meter_chunk]
        written += _validate_meters(conn, policy, days, start, ids)
    return written


def _validate_meters(
    conn: psycopg.Connection, policy: VeeJobPolicy, days: list[date], start: int, ids
) -> int:
    block = load_block(conn, ids, start, len(days), tolerance=policy.align_tolerance_s)
    overlay_edits(conn, block)  # a person's frozen value counts in the checks around it
    history = load_history(conn, ids, start, policy.profile_days)
    hist_days = [
        days[0] - timedelta(days=policy.profile_days - k) for k in range(policy.profile_days)
    ]
    kind = np.array([d.weekday() in policy.weekend for d in hist_days], dtype=np.int8)
    target = np.array([d.weekday() in policy.weekend for d in days], dtype=np.int8)
    profile = day_type_profile(history, kind, target)
    modulus = np.full(len(ids), policy.modulus)
    result = run_vee_block(
        block.registers,
        block.quality,
        np.full(len(ids), policy.max_step),
        block.frozen,
        block.frozen_quality,
        per_day=block.per_day,
        tou=block.tou,
        profile=profile,
        policy=policy.vee,
        modulus=modulus,
    )
    # reactive energy (3.8.0): the same VEE on its profile registers, no frozen registers
    r_hist = load_history(conn, ids, start, policy.profile_days, quantity=REACTIVE)
    no_frozen = np.full(block.frozen.shape, np.nan)
    reactive = run_vee_block(
        block.reactive,
        block.reactive_quality,
        np.full(len(ids), policy.max_step),
        no_frozen,
        np.zeros(no_frozen.shape, dtype=np.int16),
        per_day=block.per_day,
        profile=day_type_profile(r_hist, kind, target),
        policy=policy.vee,
        modulus=modulus,
    )
    return write_result(conn, block, result, reactive)
