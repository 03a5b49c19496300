"""The line-loss job: per area, feeder and voltage level; per 15 min, local day and month;
incremental by watermark.

Each run computes the intervals from `recompute_from` up to ``now − settle`` (whole
intervals only) and upserts their results, with the days and months holding them:

* new intervals: from the watermark (``analytics_watermarks.done_until``) on;
* late data: 15-min results stored with coverage < 1 that start within the re-read window
  are computed again, since a re-read (补抄) may since have filled them. A *complete*
  interval never changes: readings are stored first-wins (``ON CONFLICT DO NOTHING``), so
  the register at each of its boundaries is the one already used; only a boundary that was
  interpolated could move, if a re-read later stored a reading nearer to it, and re-reads
  fetch the meter's own boundary values, which were missing, i.e. incomplete intervals;
* topology changes: per metering point, replacement, area and feeder a hash of its row is
  kept with the watermark; any row added, changed or removed recomputes everything from its
  ``valid_from`` (a replacement: its ``at``; an area or a feeder: from the first reading).

One transaction per run (results and watermark together), under an advisory lock so that
two runners never interleave. A run loads the intervals from the start of the first local
day it recomputes: its days are summed from their intervals, the month from its days (the
earlier ones as stored, with their counts, which sums exactly as the intervals would).
The current day and month hold what is known so far.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from psycopg.types.json import Jsonb

from analytics.energy import interval_energy
from analytics.lineloss import (
    Bands,
    LossResult,
    concat_results,
    group_loss,
    level_loss,
    period_loss,
)
from analytics.store import ROLES, AnalyticsStore, Grid, Topology

log = logging.getLogger(__name__)

STEP = 900  # the 15-min grid
JOB = "lineloss"
_LOCK_KEY = 0x6C6F7373  # "loss"
FEEDER_HEAD, AREA_TOTAL, CUSTOMER = (ROLES.index(r) for r in ROLES)


@dataclass(frozen=True)
class LineLossPolicy:
    """What the settings decide (gridread.settings: lineloss_*, analytics_*, register_*)."""

    timezone: str
    min_coverage: float = 1.0
    bands: Bands = field(default_factory=Bands)
    settle_s: int = 1800  # an interval is computed once this long past its end
    reread_window_s: int = 3 * 86400  # incomplete results this recent are recomputed
    align_tolerance_s: int = 300  # a register this near a boundary may be interpolated
    register_modulus: float = 1_000_000.0  # DL/T 645 XXXXXX.XX kWh registers wrap here
    register_max_step: float = 10_000.0  # secondary kWh per interval above: implausible


@dataclass
class RunSummary:
    computed_from: datetime | None = None
    computed_until: datetime | None = None
    rows: int = 0
    reasons: list[str] = field(default_factory=list)


def run_lineloss(store: AnalyticsStore, policy: LineLossPolicy, now: datetime) -> RunSummary:
    """One incremental run (see the module docstring); returns what it did."""
    conn = store.conn
    summary = RunSummary()
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            summary.reasons.append("another runner holds the lock")
            return summary
        until = int(now.timestamp() - policy.settle_s) // STEP * STEP
        row = conn.execute(
            "SELECT extract(epoch FROM done_until)::int8, topology"
            " FROM analytics_watermarks WHERE job = %s",
            (JOB,),
        ).fetchone()
        done_until, seen = (int(row[0]), row[1]) if row else (None, {})
        current = _topology_snapshot(conn)
        start = _recompute_from(store, policy, until, done_until, seen, current, summary)
        if start is None:  # no readings yet: no watermark, so that the first ones all count
            summary.reasons.append("no readings of placed meters yet")
            return summary
        if start < until:
            summary.computed_from = _utc(start)
            summary.computed_until = _utc(until)
            for m_start, m_end in _months(start, until, ZoneInfo(policy.timezone)):
                summary.rows += _compute(store, policy, m_start, min(m_end, until), start)
        conn.execute(
            "INSERT INTO analytics_watermarks (job, done_until, topology, updated_at)"
            " VALUES (%s, to_timestamp(%s), %s, now())"
            " ON CONFLICT (job) DO UPDATE SET done_until = EXCLUDED.done_until,"
            "  topology = EXCLUDED.topology, updated_at = now()",
            (JOB, max(until, done_until or until), Jsonb(current)),
        )
    return summary


def _recompute_from(
    store: AnalyticsStore,
    policy: LineLossPolicy,
    until: int,
    done_until: int | None,
    seen: dict,
    current: dict,
    summary: RunSummary,
) -> int | None:
    """The first interval to compute, or None when there is nothing (no readings yet)."""
    changed = {k for k in seen.keys() | current.keys() if seen.get(k) != current.get(k)}
    candidates = []
    if done_until is not None:
        candidates.append(done_until)
        late = store.conn.execute(
            "SELECT extract(epoch FROM min(start))::int8 FROM lineloss"
            " WHERE period = '15min' AND coverage < 1"
            "   AND start >= to_timestamp(%s) AND start < to_timestamp(%s)",
            (until - policy.reread_window_s, done_until),
        ).fetchone()[0]
        if late is not None:
            candidates.append(int(late))
            summary.reasons.append("incomplete intervals in the re-read window")
        if not changed:
            return min(candidates)
    # the first reading bounds how far back there is anything to compute (a scan: only on
    # the first run and after a topology change)
    first = store.first_reading_any()
    if first is None:
        return None
    beginning = int(first.timestamp()) // STEP * STEP
    if done_until is None:
        summary.reasons.append("first run")
        candidates.append(beginning)
    for key in changed:
        for entry in (seen.get(key), current.get(key)):
            if entry is not None:
                since = entry[1]
                candidates.append(beginning if since is None else int(since) // STEP * STEP)
    if changed and done_until is not None:
        summary.reasons.append(f"topology changed ({len(changed)} rows)")
    return max(min(candidates), beginning)


def _topology_snapshot(conn) -> dict[str, list]:
    """Per topology row a [hash, since] pair: since = unix seconds from which it matters
    (None: from the beginning). Only what the results depend on is hashed (not an area's
    kVA, say), so an edit that changes nothing recomputes nothing."""
    rows = conn.execute(
        "SELECT 'p' || id, md5(mp::text),"
        " CASE WHEN isfinite(valid_from) THEN extract(epoch FROM valid_from)::float8 END"
        " FROM metering_points mp"
        " UNION ALL SELECT 'r' || id, md5(r::text), extract(epoch FROM at)::float8"
        " FROM meter_replacements r"
        " UNION ALL SELECT 'a' || id, md5(concat_ws('|', name, feeder_id, kind, lv_voltage_kv)),"
        " NULL FROM areas"
        " UNION ALL SELECT 'f' || id, md5(concat_ws('|', name, voltage_kv)), NULL FROM feeders"
        # a placed device's commissioning date decides from when it is expected
        " UNION ALL SELECT 'd' || id, md5(attributes->>'commissioned'),"
        "  extract(epoch FROM (attributes->>'commissioned')::timestamptz)::float8"
        " FROM devices WHERE attributes ? 'commissioned'"
        "  AND id IN (SELECT device_id FROM metering_points)"
    ).fetchall()
    return {key: [digest, since] for key, digest, since in rows}


def _months(start: int, until: int, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The local months (start, end) in unix seconds that hold [start, until)."""
    out = []
    local = datetime.fromtimestamp(start, tz)
    month = datetime(local.year, local.month, 1, tzinfo=tz)
    while int(month.timestamp()) < until:
        nxt = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=tz)
        out.append((int(month.timestamp()), int(nxt.timestamp())))
        month = nxt
    return out


def _local_days(grid: Grid, tz: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """Each interval's local day (T,) index, and the days' starts (unix seconds)."""
    first = datetime.fromtimestamp(grid.start, tz).date()
    last = datetime.fromtimestamp(grid.end - 1, tz).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    starts = np.array(
        [int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()) for d in days],
        dtype=np.int64,
    )
    return np.searchsorted(starts, grid.starts, side="right") - 1, starts


@dataclass
class Groups:
    """One level's inputs to group_loss."""

    names: list[str]
    supply: np.ndarray  # (G, T)
    supply_expected: np.ndarray  # (G, T) bool
    group_of: np.ndarray  # (n, T)
    expected: np.ndarray  # (n, T)


def _compute(store: AnalyticsStore, policy: LineLossPolicy, month: int, hi: int, keep: int) -> int:
    """Results for the local month starting at `month`, known up to `hi`: the 15-min ones
    from `keep` on and the local days ending after `keep`, computed from the intervals from
    the start of `keep`'s day; the month from those days and the ones stored before them."""
    tz = ZoneInfo(policy.timezone)
    lo = max(month, _day_start(keep, tz))
    grid = Grid(lo, STEP, (hi - lo) // STEP)
    topo = store.topology(grid)
    n = len(topo.device_ids)
    regs = store.registers(topo, policy.align_tolerance_s)
    energy, _flags = interval_energy(
        regs,
        topo.multiplier,
        np.full(n, policy.register_modulus),
        np.full(n, policy.register_max_step),
    )
    levels = {"area": area_groups(topo, energy), "feeder": _feeder_groups(topo, energy)}
    kwargs = {"min_coverage": policy.min_coverage, "bands": policy.bands}
    intervals = {
        level: group_loss(
            g.supply, energy, g.group_of, g.expected, supply_expected=g.supply_expected, **kwargs
        )
        for level, g in levels.items()
    }
    day_of, day_starts = _local_days(grid, tz)
    days = {
        level: period_loss(r, day_of, len(day_starts), **kwargs) for level, r in intervals.items()
    }
    earlier = _day_starts(month, lo, tz)  # the month's days before the window: stored
    months = {}
    for level, r in days.items():
        stored = store.stored_sums(
            level=level, period="day", names=levels[level].names, starts=earlier
        )
        whole = _join_days(stored, r)
        months[level] = period_loss(whole, np.zeros(whole.supply.shape[1], np.int64), 1, **kwargs)
    volt_names, volt_level = _voltage_levels(topo)
    names = {"area": levels["area"].names, "feeder": levels["feeder"].names, "voltage": volt_names}
    ends = np.append(day_starts[1:], hi)
    periods = {
        "15min": (intervals, grid.starts, grid.starts >= keep),
        "day": (days, day_starts, ends > keep),
        "month": (months, np.array([month], dtype=np.int64), np.array([True])),
    }
    written = 0
    for period, (results, starts, wanted) in periods.items():
        results = dict(results)
        both = concat_results(results["feeder"], results["area"])
        results["voltage"] = level_loss(both, volt_level, len(volt_names), bands=policy.bands)
        for level, res in results.items():
            written += store.write_lineloss(
                level=level,
                period=period,
                names=names[level],
                starts=starts[wanted],
                result=_columns(res, wanted),
            )
    return written


def _join_days(stored: dict[str, np.ndarray], new: LossResult) -> LossResult:
    """Stored day sums (G, D0) and new day results (G, D1) as one LossResult (G, D0 + D1),
    with what `period_loss` reads (sums and counts)."""
    fields = {f: np.concatenate([stored[f], getattr(new, f)], axis=1) for f in stored}
    nan = np.full(fields["supply"].shape, np.nan)
    return LossResult(
        loss=nan,
        rate=nan,
        coverage=nan,
        status=np.zeros(nan.shape, dtype=np.int8),
        **fields,
    )


def _columns(result: LossResult, wanted: np.ndarray) -> LossResult:
    return LossResult(**{f: getattr(result, f)[:, wanted] for f in LossResult.__dataclass_fields__})


def _day_start(t: int, tz: ZoneInfo) -> int:
    local = datetime.fromtimestamp(t, tz)
    return int(datetime(local.year, local.month, local.day, tzinfo=tz).timestamp())


def _day_starts(lo: int, hi: int, tz: ZoneInfo) -> np.ndarray:
    """The local midnights in [lo, hi) (lo a local midnight)."""
    out = []
    day = datetime.fromtimestamp(lo, tz).date()
    while (t := int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())) < hi:
        out.append(t)
        day += timedelta(days=1)
    return np.array(out, dtype=np.int64)


def _group_sum(
    energy: np.ndarray, group_of: np.ndarray, expected: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Σ energy (G, T) of the expected meters per group and interval, NaN when any of them is
    missing or none is expected; and whether any is expected (G, T)."""
    T = energy.shape[1]
    sel = (group_of >= 0) & expected
    rows, cols = np.nonzero(sel)
    idx = group_of[rows, cols].astype(np.int64) * T + cols
    values = energy[rows, cols]
    size = n_groups * T
    total = np.bincount(idx, weights=np.nan_to_num(values), minlength=size).astype(float)
    missing = np.bincount(idx, weights=np.isnan(values), minlength=size)
    count = np.bincount(idx, minlength=size)
    total[(missing > 0) | (count == 0)] = np.nan
    return total.reshape(n_groups, T), (count > 0).reshape(n_groups, T)


def area_groups(topo: Topology, energy: np.ndarray) -> Groups:
    """The public areas (公变台区). A dedicated area (专变) has no line loss of its own: its
    one meter is the customer's, counted in its feeder's sales."""
    public = topo.area_public
    group = np.append(np.where(public, np.cumsum(public) - 1, -1), -1)  # [NONE] → −1
    area = group[topo.area]  # area index → public-area group
    total = np.where(topo.role == AREA_TOTAL, area, -1)
    supply, supply_expected = _group_sum(energy, total, topo.expected, int(public.sum()))
    customer = (topo.role == CUSTOMER) & (area >= 0)
    return Groups(
        [name for name, pub in zip(topo.area_names, public, strict=True) if pub],
        supply,
        supply_expected,
        np.where(customer, area, -1),
        topo.expected & customer,
    )


def _feeder_groups(topo: Topology, energy: np.ndarray) -> Groups:
    F = len(topo.feeder_names)
    head = np.where(topo.role == FEEDER_HEAD, topo.feeder, -1)
    supply, supply_expected = _group_sum(energy, head, topo.expected, F)
    is_total = topo.role == AREA_TOTAL
    area = np.where(is_total, topo.area, 0)
    feeder_of = topo.area_feeder[area] if len(topo.area_feeder) else np.zeros_like(area)
    return Groups(
        topo.feeder_names,
        supply,
        supply_expected,
        np.where(is_total, feeder_of, -1),
        topo.expected & is_total,
    )


def _voltage_levels(topo: Topology) -> tuple[list[str], np.ndarray]:
    """Voltage levels (分压) by name and each group's level for `concat_results(feeders,
    public areas)`: 10 kV: the feeders; 0.4 kV: the public areas."""
    feeder_level = [f"{kv:g} kV" for kv in topo.feeder_kv]
    public = [f"{kv:g} kV" for kv, pub in zip(topo.area_kv, topo.area_public, strict=True) if pub]
    names = sorted(set(feeder_level) | set(public))
    index = {name: i for i, name in enumerate(names)}
    level = [index[lv] for lv in feeder_level + public]
    return names, np.array(level, dtype=np.int64)


def _utc(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)
