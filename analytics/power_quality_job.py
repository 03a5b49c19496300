"""The power-quality job: per local day, voltage qualification per monitor, meter (phase),
area, monitoring class and the composite; three-phase unbalance per meter; the monitors'
own statistics beside gridread's. Weeks and months are summed from their days in SQL.

Incremental by the watermark ``analytics_watermarks`` (job 'power_quality'): whole local
days from the watermark up to the last one ended ``settle`` ago, at most `max_days` a run;
days in the re-read window whose stored rows miss time are computed again (late data).
One transaction per run, under an advisory lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from analytics import power_quality as pq
from analytics import power_quality_store as load
from analytics.power_quality_write import write_day, write_flags, write_periods
from analytics.store import AnalyticsStore

JOB = "power_quality"
_LOCK_KEY = 0x70717561  # "pqua"
MONITOR_STEP, METER_STEP = 60, 900


@dataclass(frozen=True)
class PQPolicy:
    """What the settings decide (gridread.settings: pq_*, nominal_voltage, analytics_*)."""

    timezone: str
    limits: tuple[tuple[float, float, float], ...] = (
        (220.0, 7.0, -10.0),
        (380.0, 7.0, -7.0),
        (10000.0, 7.0, -7.0),
        (35000.0, 5.0, -5.0),
    )
    class_weights: tuple[float, float, float, float] = (0.5, 1 / 6, 1 / 6, 1 / 6)
    voltage_unbalance: tuple[float, float] = (2.0, 4.0)
    current_unbalance: tuple[float, float] = (2.0, 4.0)
    weekly_band_pct: tuple[float, float] = (10.0, -10.0)
    weekly_wide_pct: tuple[float, float] = (10.0, -15.0)
    weekly_share: float = 95.0
    disagreement_pp: float = 0.5
    site_nominal_v: float = 220.0
    settle_s: int = 1800
    reread_window_s: int = 3 * 86400
    max_days: int = 31


@dataclass
class PQSummary:
    days: list[date] = field(default_factory=list)
    rows: int = 0
    reasons: list[str] = field(default_factory=list)


def run_power_quality(store: AnalyticsStore, policy: PQPolicy, now: datetime) -> PQSummary:
    """One incremental run (see the module docstring)."""
    conn, tz = store.conn, ZoneInfo(policy.timezone)
    summary = PQSummary()
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            summary.reasons.append("another runner holds the lock")
            return summary
        last = datetime.fromtimestamp(now.timestamp() - policy.settle_s, tz).date()  # not done
        row = conn.execute(
            "SELECT done_until FROM analytics_watermarks WHERE job = %s", (JOB,)
        ).fetchone()
        first = _first_day(conn, tz, row[0] if row else None, last, policy, summary)
        if first is None:
            return summary
        days = [first + timedelta(days=i) for i in range((last - first).days)][: policy.max_days]
        for day in days:
            summary.rows += _compute_day(store, policy, day, tz)
        summary.days = days
        if days:
            summary.rows += write_periods(conn, policy, days[0], days[-1])
            end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tz)
            done = max(end, row[0]) if row else end
            conn.execute(
                "INSERT INTO analytics_watermarks (job, done_until, updated_at)"
                " VALUES (%s, %s, now()) ON CONFLICT (job) DO UPDATE"
                " SET done_until = EXCLUDED.done_until, updated_at = now()",
                (JOB, done),
            )
    return summary


def _first_day(conn, tz, done_until, last: date, policy: PQPolicy, summary) -> date | None:
    if done_until is None:
        first = conn.execute(
            "SELECT min(f.ts) FROM devices d, LATERAL (SELECT ts FROM readings r"
            " WHERE r.device_id = d.id AND r.quantity = '32.7.0' ORDER BY ts LIMIT 1) f"
            " WHERE d.kind IN ('meter', 'voltage_monitor')"
        ).fetchone()[0]
        if first is None:
            summary.reasons.append("no voltages yet")
            return None
        summary.reasons.append("first run")
        return first.astimezone(tz).date()
    start = done_until.astimezone(tz).date()
    window = last - timedelta(seconds=policy.reread_window_s)
    late = conn.execute(
        "SELECT min(start) FROM pq_voltage WHERE period = 'day' AND kind IN ('monitor', 'meter')"
        " AND missing_s > 0 AND start >= %s AND start < %s",
        (_midnight(window, tz), done_until),
    ).fetchone()[0]
    if late is not None:
        summary.reasons.append("days with missing time in the re-read window")
        start = min(start, late.astimezone(tz).date())
    return start


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), tz)


def _compute_day(store: AnalyticsStore, policy: PQPolicy, day: date, tz: ZoneInfo) -> int:
    lo = int(_midnight(day, tz).timestamp())
    hi = int(_midnight(day + timedelta(days=1), tz).timestamp())
    mon = load.monitors(store.conn, policy.site_nominal_v)
    met = load.meters(store.conn, lo, policy.site_nominal_v)
    table = np.array(policy.limits, dtype=float)

    # monitors: one-minute voltages
    Tm = (hi - lo) // MONITOR_STEP
    vm = load.series(store, mon.ids, ("32.7.0",), lo, MONITOR_STEP, Tm)[0]
    stats = load.monitor_stats(store.conn, day)
    has = np.isfinite(vm).any(axis=1) | np.isin(mon.ids, list(stats)) | (mon.commissioned < hi)
    up_m, low_m = pq.limits_for(mon.nominal, table)
    exp_m = np.repeat(has[:, None], Tm, axis=1)
    q_m = pq.qualification(vm, mon.nominal, up_m, low_m, np.zeros(Tm, int), 1, MONITOR_STEP, exp_m)
    c_m = _tenmin(pq.ten_minute_means(vm, MONITOR_STEP), mon.nominal, policy)
    per_class = pq.combine(_rows(q_m, has), mon.class_of[has], len(pq.CLASSES))

    # meters: 15-min voltages per phase
    Tq = (hi - lo) // METER_STEP
    v3 = load.series(store, met.ids, load.PHASE_VOLTAGE, lo, METER_STEP, Tq)  # (3, n, T)
    rows = _meter_phase_rows(met, v3)
    v = v3[rows.phase_idx, rows.meter]
    up, low = pq.limits_for(met.system_v[rows.meter], table)
    nominal = met.nominal[rows.meter]
    starts = lo + METER_STEP * np.arange(Tq)
    exp = met.placed[rows.meter][:, None] & (
        starts[None, :] >= met.commissioned[rows.meter][:, None]
    )
    q_v = pq.qualification(v, nominal, up, low, np.zeros(Tq, int), 1, METER_STEP, exp)
    c_v = _tenmin(v, nominal, policy)
    areas, meter_area = _area_index(met)
    area_of = meter_area[rows.meter]
    q_a = pq.combine(q_v, area_of, len(areas))
    c_a = {k: _group_sum(c_v[k], area_of, len(areas)) for k in c_v}

    unb = _unbalance(store, met, v3, lo, Tq, policy)
    start = _midnight(day, tz)
    written = write_day(
        store.conn,
        start,
        monitors=(mon, has, up_m, low_m, q_m, c_m),
        meters=(met, rows, up, low, nominal, q_v, c_v),
        areas=(areas, q_a, c_a),
        classes=per_class,
        unbalance=unb,
        weights=policy.class_weights,
    )
    return written + write_flags(store.conn, day, mon, has, up_m, low_m, q_m, stats, policy)


def _rows(q: pq.Qualification, keep: np.ndarray) -> pq.Qualification:
    return pq.Qualification(
        **{f: getattr(q, f)[keep] for f in pq.Qualification.__dataclass_fields__}
    )


@dataclass
class PhaseRows:
    meter: np.ndarray  # (r,) index into Meters
    phase_idx: np.ndarray  # (r,) 0…2: which voltage quantity
    phase_code: np.ndarray  # (r,) 0…2: the phase the voltage is of (A, B, C)


def _meter_phase_rows(met: load.Meters, v3: np.ndarray) -> PhaseRows:
    """One row per meter and phase with readings or expected: a three-phase point (or an
    unplaced meter with that phase's readings) A, B, C; a single-phase one its phase, whose
    voltage comes as 32.7.0."""
    seen = np.isfinite(v3).any(axis=2)  # (3, n)
    single = met.placed & ~met.three_phase
    first = (np.arange(3) == 0)[:, None]
    mask = np.where(single[None, :], first, (met.placed & met.three_phase)[None, :] | seen)
    meter, idx = np.nonzero(mask.T)  # by meter, then phase
    own = np.array(["ABC".find(p[0]) if len(p) == 1 else 0 for p in met.phase], dtype=np.int64)
    code = np.where(single[meter], own[meter], idx)
    return PhaseRows(meter.astype(np.int64), idx.astype(np.int64), code.astype(np.int64))


def _area_index(met: load.Meters) -> tuple[list[str], np.ndarray]:
    """The areas' names (sorted) and each meter's index among them (−1: none)."""
    named = np.array([a or "" for a in met.area] or [""], dtype=str)  # "" sorts first
    unique, inverse = np.unique(np.append(named, ""), return_inverse=True)
    return unique[1:].tolist(), (inverse[: len(met.area)] - 1).astype(np.int64)


def _tenmin(means: np.ndarray, nominal: np.ndarray, policy: PQPolicy) -> dict[str, np.ndarray]:
    """The day's 10-min counts per row for the weekly compliance."""
    (bu, bl), (wu, wl) = policy.weekly_band_pct, policy.weekly_wide_pct
    c = pq.weekly_compliance(
        means,
        np.zeros(means.shape[1], int),
        1,
        (nominal * (1 + bl / 100), nominal * (1 + bu / 100)),
        (nominal * (1 + wl / 100), nominal * (1 + wu / 100)),
        policy.weekly_share,
    )
    return {
        "means": c.means[:, 0],
        "within": c.within[:, 0],
        "outside_wide": c.outside_wide[:, 0],
        "incomplete": c.incomplete[:, 0],
    }


def _group_sum(a: np.ndarray, group_of: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.zeros(n_groups + 1)
    np.add.at(out, group_of, a)
    return out[:n_groups]


def _unbalance(store, met: load.Meters, v3, lo: int, T: int, policy: PQPolicy) -> dict:
    """Per three-phase meter (any B or C voltage seen, or placed ABC): voltage and current
    unbalance of the day's 15-min values."""
    three = met.three_phase & met.placed | np.isfinite(v3[1:]).any(axis=(0, 2))
    sel = np.flatnonzero(three)
    ids = met.ids[sel]
    out = {}
    if len(sel) == 0:
        return {"meters": sel}
    vmag = np.moveaxis(v3[:, sel], 0, -1)  # (k, T, 3)
    ang = load.series(store, ids, load.ANGLES_U + load.ANGLES_I, lo, METER_STEP, T)
    # phasor angles: Va 0, Vb −θ(U2/U1), Vc −θ(U3/U1); I_k = angle(V_k) − φ_k (lagging +)
    v_ang = np.stack([np.zeros_like(ang[0]), -ang[0], -ang[1]], axis=-1)
    i_ang = v_ang - np.moveaxis(ang[2:5], 0, -1)
    imag = np.moveaxis(load.series(store, ids, load.PHASE_CURRENT, lo, METER_STEP, T), 0, -1)
    for name, mag, angle, (normal, short) in (
        ("voltage", vmag, v_ang, policy.voltage_unbalance),
        ("current", imag, i_ang, policy.current_unbalance),
    ):
        u = pq.unbalance(mag, angle)
        with np.errstate(invalid="ignore"):
            out[name] = {
                "n_values": np.isfinite(u).sum(axis=1),
                "n_sequence": (np.isfinite(u) & np.isfinite(angle).all(axis=-1)).sum(axis=1),
                "within_normal": (u <= normal + 1e-9).sum(axis=1),
                "beyond_short": (u > short + 1e-9).sum(axis=1),
                "max_pct": np.where(
                    np.isfinite(u).any(axis=1), np.nanmax(np.nan_to_num(u, nan=-1), axis=1), np.nan
                ),
            }
    out["meters"] = sel
    return out


def policy_from_settings(settings) -> PQPolicy:
    """The job's policy from gridread.settings.Settings (pq_*, nominal_voltage, analytics_*)."""
    return PQPolicy(
        timezone=settings.timezone,
        limits=tuple(tuple(row) for row in settings.pq_voltage_limits),
        class_weights=tuple(settings.pq_class_weights),
        voltage_unbalance=tuple(settings.pq_voltage_unbalance_limits),
        current_unbalance=tuple(settings.pq_current_unbalance_limits),
        weekly_band_pct=tuple(settings.pq_weekly_band_pct),
        weekly_wide_pct=tuple(settings.pq_weekly_wide_pct),
        weekly_share=settings.pq_weekly_share,
        disagreement_pp=settings.pq_monitor_disagreement_pp,
        site_nominal_v=settings.nominal_voltage,
        settle_s=round(settings.analytics_settle_delay),
        reread_window_s=round(settings.analytics_reread_days * 86400),
    )
