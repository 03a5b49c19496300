"""The reliability job: interruptions and indices per area, feeder and system, per local
month and year; incremental by watermark.

The unit of recomputation is a local calendar year (its months, the year, the interruptions
starting in it). Kept with the watermark (``analytics_watermarks``, job ``reliability``): per
year a fingerprint (count, Σ time + device) of the interruption events starting in it, and one
hash of the placements, areas, feeders, devices' area/feeder attributes and outage notices.
A run recomputes the years whose fingerprint changed (new or late-read events), all years
when the topology or the notices changed, and the current year once per local day (its
periods so far grow). One transaction, under an advisory lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from analytics import reliability as rel
from analytics.reliability_store import KIND_NAMES, ReliabilityInput, load_input

log = logging.getLogger(__name__)

JOB = "reliability"
_LOCK_KEY = 0x72656C69  # "reli"


@dataclass(frozen=True)
class ReliabilityPolicy:
    """What the settings decide (gridread.settings: reliability_*)."""

    timezone: str
    threshold_s: int = 300
    tolerance_s: int = 60
    lookback_s: int = 7 * 86400
    rs3_excludes: tuple[str, ...] = ("planned", "limited")
    customer_events: tuple[str, ...] = ("power_down",)
    group_events: tuple[str, ...] = ("voltage_loss", "outage")


def reliability_policy(settings) -> ReliabilityPolicy:
    """From gridread.settings.Settings (its reliability_* fields)."""
    return ReliabilityPolicy(
        timezone=settings.timezone,
        threshold_s=settings.reliability_momentary_threshold,
        tolerance_s=settings.reliability_tolerance,
        lookback_s=round(settings.reliability_lookback_days * 86400),
        rs3_excludes=tuple(settings.reliability_rs3_excludes),
        customer_events=tuple(settings.reliability_customer_events),
        group_events=tuple(settings.reliability_group_events),
    )


@dataclass
class ReliabilitySummary:
    years: list[int] = field(default_factory=list)
    interruptions: int = 0
    rows: int = 0
    unplaced: int = 0
    refused: int = 0
    open: int = 0
    reasons: list[str] = field(default_factory=list)


def run_reliability(
    conn: psycopg.Connection, policy: ReliabilityPolicy, now: datetime
) -> ReliabilitySummary:
    """One incremental run (see the module docstring)."""
    summary = ReliabilitySummary()
    tz = ZoneInfo(policy.timezone)
    kinds = [*policy.customer_events, *policy.group_events]
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            summary.reasons.append("another runner holds the lock")
            return summary
        row = conn.execute(
            "SELECT done_until, topology FROM analytics_watermarks WHERE job = %s", (JOB,)
        ).fetchone()
        done_until, seen = (row[0], row[1]) if row else (None, {})
        years = _fingerprints(conn, kinds, policy.timezone)
        topo = _topology_hash(conn)
        today = now.astimezone(tz)
        todo = {y for y, fp in years.items() if seen.get("years", {}).get(y) != fp}
        if todo:
            summary.reasons.append("new or changed events")
        if seen.get("topology") != topo and years:
            todo |= set(years)
            summary.reasons.append("topology or notices changed")
        if done_until is None or done_until.astimezone(tz).date() != today.date():
            todo.add(str(today.year))
        for year in sorted(todo, key=int):
            if int(year) <= today.year:
                _compute_year(conn, policy, int(year), now, summary)
        conn.execute(
            "INSERT INTO analytics_watermarks (job, done_until, topology, updated_at)"
            " VALUES (%s, %s, %s, now())"
            " ON CONFLICT (job) DO UPDATE SET done_until = EXCLUDED.done_until,"
            "  topology = EXCLUDED.topology, updated_at = now()",
            (JOB, now, Jsonb({"years": years, "topology": topo})),
        )
    if summary.years:
        log.info(
            "reliability: years %s: %d interruptions, %d index rows (%s)",
            summary.years,
            summary.interruptions,
            summary.rows,
            "; ".join(summary.reasons) or "the current year",
        )
    if summary.unplaced or summary.refused:
        log.warning(
            "reliability: %d event(s) of devices placed nowhere, %d ending before they start:"
            " not used",
            summary.unplaced,
            summary.refused,
        )
    return summary


def _fingerprints(conn, kinds: list[str], timezone: str) -> dict[str, list[int]]:
    rows = conn.execute(
        # events are stored once and never updated (ingest/events.py: ON CONFLICT DO
        # NOTHING), so a row added or removed is all that can change a year
        "SELECT extract(year FROM ts AT TIME ZONE %s)::int, count(*),"
        " sum(extract(epoch FROM ts)::int8 + device_id)::int8"
        " FROM events WHERE kind = ANY(%s) GROUP BY 1",
        (timezone, kinds),
    ).fetchall()
    return {str(y): [int(n), int(h)] for y, n, h in rows}


def _topology_hash(conn) -> str:
    return conn.execute(
        "SELECT md5(concat_ws('#',"
        " (SELECT string_agg(concat_ws('|', id, device_id, role, area_id, feeder_id,"
        "   valid_from, valid_to), ',' ORDER BY id) FROM metering_points),"
        " (SELECT string_agg(concat_ws('|', id, name, feeder_id, kind), ',' ORDER BY id)"
        "   FROM areas),"
        " (SELECT string_agg(concat_ws('|', id, name), ',' ORDER BY id) FROM feeders),"
        " (SELECT string_agg(concat_ws('|', id, attributes->>'area', attributes->>'feeder'),"
        "   ',' ORDER BY id) FROM devices WHERE kind <> 'meter'),"
        " (SELECT string_agg(concat_ws('|', id, scope, name, kind, start, \"end\"), ','"
        "   ORDER BY id) FROM outage_notices)))"
    ).fetchone()[0]


def _month_bounds(year: int, tz: ZoneInfo, now: int) -> np.ndarray:
    """The local months' starts of `year` up to `now`, then the end (the year's, or now)."""
    starts = [int(datetime(year, m, 1, tzinfo=tz).timestamp()) for m in range(1, 13)]
    end = min(int(datetime(year + 1, 1, 1, tzinfo=tz).timestamp()), now)
    return np.array([s for s in starts if s < end] + [end], dtype=np.int64)


def compute(
    data: ReliabilityInput, policy: ReliabilityPolicy, lo: int, hi: int
) -> tuple[rel.Blocks, rel.Interruptions]:
    """The customers' interruptions starting in [lo, hi), and the areas' interruptions."""
    n = data.customer_ids.size
    indptr_a, members_a = rel.csr(data.customer_area, len(data.area_names))
    cust_feeder = data.area_feeder[data.customer_area] if n else np.zeros(0, np.int64)
    indptr_f, members_f = rel.csr(cust_feeder, len(data.feeder_names))
    parts = [(data.customers.owner, data.customers.start, data.customers.end)]
    parts.append(
        rel.expand(data.areas.owner, data.areas.start, data.areas.end, indptr_a, members_a)
    )
    parts.append(
        rel.expand(data.feeders.owner, data.feeders.start, data.feeders.end, indptr_f, members_f)
    )
    c, s, e = (np.concatenate([p[i] for p in parts]) for i in range(3))
    blocks = rel.merge_customer(c, s, e, tolerance=policy.tolerance_s)
    keep = (blocks.start >= lo) & (blocks.start < hi)
    blocks = rel.Blocks(
        blocks.customer[keep], blocks.start[keep], blocks.end[keep], blocks.kind[keep]
    )
    blocks.kind = rel.classify(
        data.customer_area[blocks.customer],
        blocks.start,
        data.notice_area,
        data.notice_start,
        data.notice_end,
        data.notice_kind,
        tolerance=policy.tolerance_s,
    )
    found = rel.area_interruptions(
        blocks, data.customer_area, tolerance=policy.tolerance_s, threshold=policy.threshold_s
    )
    return blocks, found


def _compute_year(conn, policy: ReliabilityPolicy, year: int, now: datetime, summary) -> None:
    tz = ZoneInfo(policy.timezone)
    months = _month_bounds(year, tz, int(now.timestamp()))
    lo, hi = int(months[0]), int(months[-1])
    if hi <= lo:  # `now` is the year's first instant: nothing of it yet
        return
    data = load_input(
        conn,
        lo - policy.lookback_s,
        hi,
        customer_events=list(policy.customer_events),
        group_events=list(policy.group_events),
    )
    summary.years.append(year)
    summary.unplaced += data.unplaced
    summary.refused += data.refused
    if data.stray_notices:
        summary.reasons.append(f"notices of unknown groups not used: {data.stray_notices}")
        log.warning("reliability: outage notices of unknown groups: %s", data.stray_notices)
    blocks, found = compute(data, policy, lo, hi)
    excludes = tuple(rel.Kind(KIND_NAMES.index(k)) for k in policy.rs3_excludes)
    A, F = len(data.area_names), len(data.feeder_names)
    cust_area = data.customer_area
    levels = [
        ("area", data.area_names, cust_area, A),
        ("feeder", data.feeder_names, data.area_feeder[cust_area], F),
        ("system", ["system"], np.zeros(cust_area.size, dtype=np.int64), 1),
    ]
    conn.execute(
        "DELETE FROM interruptions WHERE start >= to_timestamp(%s) AND start < to_timestamp(%s)",
        (lo, hi),
    )
    conn.execute(
        "DELETE FROM reliability_indices WHERE start >= to_timestamp(%s)"
        " AND start < to_timestamp(%s)",
        (lo, hi),
    )
    with conn.cursor() as cur:
        with cur.copy(
            'COPY interruptions (area, feeder, start, "end", customers, open, customer_minutes,'
            " kind, momentary) FROM STDIN"
        ) as cp:
            for i in range(found.area.size):
                a = int(found.area[i])
                end = found.end[i]
                cp.write_row(
                    (
                        data.area_names[a],
                        data.feeder_names[int(data.area_feeder[a])],
                        datetime.fromtimestamp(int(found.start[i]), UTC),
                        None if np.isnan(end) else datetime.fromtimestamp(float(end), UTC),
                        int(found.customers[i]),
                        int(found.open[i]),
                        float(found.customer_minutes[i]),
                        KIND_NAMES[int(found.kind[i])],
                        bool(found.momentary[i]),
                    )
                )
        summary.interruptions += int(found.area.size)
        summary.open += int(found.open.sum())
        with cur.copy(
            "COPY reliability_indices (level, name, period, start, hours, customers, sustained,"
            " momentary, open, customer_minutes, minutes_rs3, saifi, saidi, caidi, asai, maifi,"
            " rs1, rs3) FROM STDIN"
        ) as cp:
            for period, bounds in (("month", months), ("year", np.array([lo, hi]))):
                for level, names, group_of, G in levels:
                    r = rel.indices(
                        blocks,
                        group_of,
                        G,
                        bounds,
                        threshold=policy.threshold_s,
                        rs3_excludes=excludes,
                    )
                    summary.rows += _write_indices(cp, level, names, period, bounds, r)


def _opt(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _write_indices(cp, level, names, period, bounds, r: rel.Indices) -> int:
    """One row per group and period (a loop per row: groups × periods, not per customer)."""
    rows = 0
    for g, name in enumerate(names):
        for p in range(bounds.size - 1):
            cp.write_row(
                (
                    level,
                    name,
                    period,
                    datetime.fromtimestamp(int(bounds[p]), UTC),
                    float(r.hours[p]),
                    int(r.customers[g]),
                    int(r.sustained[g, p]),
                    int(r.momentary[g, p]),
                    int(r.open[g, p]),
                    float(r.customer_minutes[g, p]),
                    float(r.minutes_rs3[g, p]),
                    _opt(r.saifi[g, p]),
                    _opt(r.saidi[g, p]),
                    _opt(r.caidi[g, p]),
                    _opt(r.asai[g, p]),
                    _opt(r.maifi[g, p]),
                    _opt(r.rs1[g, p]),
                    _opt(r.rs3[g, p]),
                )
            )
            rows += 1
    return rows
