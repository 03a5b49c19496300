"""Writing the power-quality job's results (migration 10, ingest/schema_pq.py): the day rows
from arrays, the weeks and months as sums of their days (SQL), the composite of every period
from its class rows (analytics.power_quality.composite_rate)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from analytics import pgbinary
from analytics import power_quality as pq

_V_COLS = (
    "kind, name, phase, period, start, nominal_v, upper_pct, lower_pct, monitoring_class,"
    " monitored_s, missing_s, over_s, under_s, rate, max_v, min_v, tenmin_means,"
    " tenmin_within, tenmin_outside_wide, tenmin_incomplete, days, compliant"
)
_V_UPSERT = (
    f"INSERT INTO pq_voltage ({_V_COLS}) VALUES ({', '.join(['%s'] * 22)})"
    " ON CONFLICT (kind, name, phase, period, start) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in _V_COLS.split(",")[5:])
    + ", computed_at = now()"
)
_U_COLS = (
    "name, quantity, period, start, n_values, n_sequence, within_normal, beyond_short,"
    " max_pct, share_pct, compliant, days"
)
_U_UPSERT = (
    f"INSERT INTO pq_unbalance ({_U_COLS}) VALUES ({', '.join(['%s'] * 12)})"
    " ON CONFLICT (name, quantity, period, start) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in _U_COLS.split(",")[4:])
    + ", computed_at = now()"
)


def _f(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


_PHASES = ["A", "B", "C", "-"]
_V_IN = """
    CREATE TEMP TABLE IF NOT EXISTS pq_voltage_in (
        name_idx int4, phase_idx int2, class_idx int2, nominal_v float8, upper_pct float8,
        lower_pct float8, monitored_s float8, missing_s float8, over_s float8, under_s float8,
        rate float8, max_v float8, min_v float8, tenmin_means int4, tenmin_within int4,
        tenmin_outside_wide int4, tenmin_incomplete int4
    ) ON COMMIT DROP
"""
_U_IN = """
    CREATE TEMP TABLE IF NOT EXISTS pq_unbalance_in (
        name_idx int4, n_values int4, n_sequence int4, within_normal int4, beyond_short int4,
        max_pct float8
    ) ON COMMIT DROP
"""


def _copy(conn: psycopg.Connection, table: str, columns: list[tuple[np.ndarray, str]]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(pgbinary.encode(columns))


def _write_voltage(
    conn,
    kind: str,
    names: list[str],
    name_idx,
    phase_idx,
    start: datetime,
    q: pq.Qualification,
    c: dict,
    nominal=None,
    up=None,
    low=None,
    class_idx=None,
) -> int:
    """One kind's day rows: row r is names[name_idx[r]], phase _PHASES[phase_idx[r]]."""
    r = len(name_idx)
    if r == 0:
        return 0
    nan = np.full(r, np.nan)
    conn.execute(_V_IN)
    _copy(conn, "pq_voltage_in", [
        (np.asarray(name_idx, np.int32), "int4"),
        (np.asarray(phase_idx, np.int16), "int2"),
        (np.full(r, -1, np.int16) if class_idx is None else class_idx.astype(np.int16), "int2"),
        (nan if nominal is None else np.asarray(nominal, float), "float8"),
        (nan if up is None else np.asarray(up, float), "float8"),
        (nan if low is None else np.asarray(low, float), "float8"),
        *((getattr(q, f)[:, 0].astype(float), "float8") for f in _Q_FIELDS),
        *((np.asarray(c[k]).astype(np.int32), "int4") for k in _C_FIELDS),
    ])  # fmt: skip
    cur = conn.execute(
        f"INSERT INTO pq_voltage ({_V_COLS}) SELECT %(kind)s, n.name,"
        " (%(phases)s::text[])[i.phase_idx + 1], 'day', %(start)s,"
        " NULLIF(nominal_v, 'NaN'), NULLIF(upper_pct, 'NaN'), NULLIF(lower_pct, 'NaN'),"
        " ('{A,B,C,D}'::text[])[NULLIF(i.class_idx + 1, 0)], monitored_s, missing_s, over_s,"
        " under_s, NULLIF(rate, 'NaN'), NULLIF(max_v, 'NaN'), NULLIF(min_v, 'NaN'),"
        " tenmin_means, tenmin_within, tenmin_outside_wide, tenmin_incomplete, 1, NULL"
        " FROM pq_voltage_in i JOIN unnest(%(names)s::text[]) WITH ORDINALITY AS n(name, idx)"
        " ON n.idx = i.name_idx + 1" + _V_UPSERT[_V_UPSERT.index(" ON CONFLICT") :],
        {"kind": kind, "phases": _PHASES, "start": start, "names": names},
    )
    n = cur.rowcount
    conn.execute("TRUNCATE pq_voltage_in")
    return n


_Q_FIELDS = ("monitored", "missing", "over", "under", "rate", "max_v", "min_v")
_C_FIELDS = ("means", "within", "outside_wide", "incomplete")


def write_day(
    conn: psycopg.Connection,
    start: datetime,
    *,
    monitors,
    meters,
    areas,
    classes: pq.Qualification,
    unbalance: dict,
    weights: tuple[float, ...],
) -> int:
    """The day rows of every kind, then the day's composite from its class rows."""
    mon, has, up_m, low_m, q_m, c_m = monitors
    keep = np.flatnonzero(has)
    q_keep = pq.Qualification(
        **{f: getattr(q_m, f)[keep] for f in pq.Qualification.__dataclass_fields__}
    )
    c_keep = {k: v[keep] for k, v in c_m.items()}
    dash = _PHASES.index("-")
    n = _write_voltage(
        conn, "monitor", mon.names, keep, np.full(len(keep), dash), start, q_keep, c_keep,
        mon.nominal[keep], up_m[keep], low_m[keep], mon.class_of[keep],
    )  # fmt: skip
    met, prow, up, low, nominal, q_v, c_v = meters
    n += _write_voltage(
        conn, "meter", met.names, prow.meter, prow.phase_code, start, q_v, c_v, nominal, up, low
    )
    area_names, q_a, c_a = areas
    G = len(area_names)
    n += _write_voltage(conn, "area", area_names, np.arange(G), np.full(G, dash), start, q_a, c_a)
    cls = mon.class_of[keep]
    known = cls >= 0
    c_cls = {k: np.bincount(cls[known], v[known], 4) for k, v in c_keep.items()}
    n += _write_voltage(
        conn, "class", list(pq.CLASSES), np.arange(4), np.full(4, dash), start, classes, c_cls
    )
    n += _write_composite(conn, "day", [start], weights)
    sel = unbalance["meters"]
    for quantity in ("voltage", "current") if len(sel) else ():
        u = unbalance[quantity]
        conn.execute(_U_IN)
        _copy(conn, "pq_unbalance_in", [
            (sel.astype(np.int32), "int4"),
            *((u[k].astype(np.int32), "int4")
              for k in ("n_values", "n_sequence", "within_normal", "beyond_short")),
            (u["max_pct"].astype(float), "float8"),
        ])  # fmt: skip
        cur = conn.execute(
            f"INSERT INTO pq_unbalance ({_U_COLS}) SELECT n.name, %(q)s, 'day', %(start)s,"
            " n_values, n_sequence, within_normal, beyond_short, NULLIF(max_pct, 'NaN'),"
            " CASE WHEN n_values > 0 THEN within_normal * 100.0 / n_values END, NULL, 1"
            " FROM pq_unbalance_in i JOIN unnest(%(names)s::text[]) WITH ORDINALITY"
            " AS n(name, idx) ON n.idx = i.name_idx + 1"
            + _U_UPSERT[_U_UPSERT.index(" ON CONFLICT") :],
            {"q": quantity, "start": start, "names": met.names},
        )
        n += cur.rowcount
        conn.execute("TRUNCATE pq_unbalance_in")
    return n


def write_flags(conn, day: date, mon, has, up_m, low_m, q_m, stats: dict, policy) -> int:
    """The monitors' own statistics of `day` beside gridread's; flagged when the rates differ
    by more than `policy.disagreement_pp` (or only one of them exists); `reasons` also say
    when the limits or the monitored minutes differ, which explains most disagreements."""
    rows = []
    for i, device_id in enumerate(mon.ids):
        own = stats.get(int(device_id))
        if own is None:
            continue
        o_mon, o_over, o_under, o_up, o_low = own
        own_rate = (1 - (o_over + o_under) / o_mon) * 100 if o_mon > 0 else None
        rate = _f(q_m.rate[i, 0])
        upper_v = float(mon.nominal[i] * (1 + up_m[i] / 100))
        lower_v = float(mon.nominal[i] * (1 + low_m[i] / 100))
        diff = None if own_rate is None or rate is None else rate - own_rate
        reasons = []
        if (own_rate is None) != (rate is None) or (
            diff is not None and abs(diff) > policy.disagreement_pp
        ):
            reasons.append("rate")
        if abs(o_up - upper_v) > 0.05 or abs(o_low - lower_v) > 0.05:
            reasons.append("limits")
        if abs(o_mon - q_m.monitored[i, 0] / 60) >= 1:
            reasons.append("monitored")
        rows.append(
            (
                int(device_id),
                mon.names[i],
                day,
                own_rate,
                o_mon,
                o_over,
                o_under,
                o_up,
                o_low,
                rate,
                q_m.monitored[i, 0] / 60,
                q_m.over[i, 0] / 60,
                q_m.under[i, 0] / 60,
                upper_v,
                lower_v,
                diff,
                reasons,
                "rate" in reasons,
            )
        )
    cols = (
        "device_id, name, day, own_rate, own_monitored_min, own_over_min, own_under_min,"
        " own_upper_v, own_lower_v, rate, monitored_min, over_min, under_min, upper_v,"
        " lower_v, diff_pp, reasons, flagged"
    )
    sets = ", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in cols.split(",")[3:])
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO pq_monitor_flags ({cols}) VALUES ({', '.join(['%s'] * 18)})"
            f" ON CONFLICT (device_id, day) DO UPDATE SET {sets}, computed_at = now()",
            rows,
        )
    return len(rows)


def write_periods(conn: psycopg.Connection, policy, first: date, last: date) -> int:
    """The weeks (from Monday) and months holding [first, last], summed from their days."""
    tz = ZoneInfo(policy.timezone)
    lo = datetime.combine(first - timedelta(days=first.weekday()), datetime.min.time(), tz)
    lo = min(lo, datetime.combine(first.replace(day=1), datetime.min.time(), tz))
    hi = datetime.combine(last, datetime.min.time(), tz)
    n = 0
    for period, unit in (("week", "week"), ("month", "month")):
        p = {
            "period": period,
            "unit": unit,
            "tz": policy.timezone,
            "lo": lo,
            "hi": hi,
            "share": policy.weekly_share,
        }
        n += conn.execute(_SUM_V, p).rowcount
        n += conn.execute(_SUM_U, p).rowcount
        starts = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT start FROM pq_voltage WHERE kind = 'class' AND period = %s"
                " AND start >= %s AND start <= %s ORDER BY 1",
                (period, lo, hi),
            ).fetchall()
        ]
        n += _write_composite(conn, period, starts, policy.class_weights)
    return n


_PERIOD = "(date_trunc(%(unit)s, start AT TIME ZONE %(tz)s) AT TIME ZONE %(tz)s)"
_WEEK_OK = (
    "CASE WHEN %(period)s = 'week' THEN sum({n}) > 0"
    " AND sum({within}) * 100.0 >= %(share)s * sum({n}) - 1e-9 AND sum({bad}) = 0 END"
)
_SUM_V = (
    f"INSERT INTO pq_voltage ({_V_COLS}) SELECT kind, name, phase, %(period)s, p,"
    " (array_agg(nominal_v ORDER BY start DESC))[1], (array_agg(upper_pct ORDER BY start DESC))[1],"
    " (array_agg(lower_pct ORDER BY start DESC))[1],"
    " (array_agg(monitoring_class ORDER BY start DESC))[1],"
    " sum(monitored_s), sum(missing_s), sum(over_s), sum(under_s),"
    " CASE WHEN sum(monitored_s) > 0 THEN (1 - (sum(over_s) + sum(under_s)) / sum(monitored_s))"
    "  * 100 END, max(max_v), min(min_v), sum(tenmin_means), sum(tenmin_within),"
    " sum(tenmin_outside_wide), sum(tenmin_incomplete), count(*), "
    + _WEEK_OK.format(n="tenmin_means", within="tenmin_within", bad="tenmin_outside_wide")
    + f" FROM (SELECT *, {_PERIOD} AS p FROM pq_voltage WHERE period = 'day'"
    "  AND kind <> 'composite') d WHERE p >= %(lo)s AND p <= %(hi)s"
    " GROUP BY kind, name, phase, p" + _V_UPSERT[_V_UPSERT.index(" ON CONFLICT") :]
)
_SUM_U = (
    f"INSERT INTO pq_unbalance ({_U_COLS}) SELECT name, quantity, %(period)s, p,"
    " sum(n_values), sum(n_sequence), sum(within_normal), sum(beyond_short), max(max_pct),"
    " CASE WHEN sum(n_values) > 0 THEN sum(within_normal) * 100.0 / sum(n_values) END, "
    + _WEEK_OK.format(n="n_values", within="within_normal", bad="beyond_short")
    + ", count(*)"
    + f" FROM (SELECT *, {_PERIOD} AS p FROM pq_unbalance WHERE period = 'day') d"
    " WHERE p >= %(lo)s AND p <= %(hi)s GROUP BY name, quantity, p"
    + _U_UPSERT[_U_UPSERT.index(" ON CONFLICT") :]
)


def _write_composite(conn, period: str, starts: list, weights: tuple[float, ...]) -> int:
    """The composite rate of each period start from its four class rows."""
    if not starts:
        return 0
    rows = conn.execute(
        "SELECT start, name, monitored_s, missing_s, over_s, under_s, max_v, min_v"
        " FROM pq_voltage WHERE kind = 'class' AND period = %s AND start = ANY(%s)",
        (period, starts),
    ).fetchall()
    P = len(starts)
    col = {s: j for j, s in enumerate(starts)}
    a = np.zeros((6, 4, P))
    a[4:] = np.nan
    for start, name, *vals in rows:
        a[:, "ABCD".index(name), col[start]] = [np.nan if v is None else v for v in vals]
    mon, mis, over, under, vmax, vmin = a
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(mon > 0, (1 - (over + under) / mon) * 100, np.nan)
    q = pq.Qualification(mon, mis, over, under, rate, vmax, vmin)
    composite, _ = pq.composite_rate(q, np.arange(4), np.array(weights))
    out = [
        (
            "composite",
            "all",
            "-",
            period,
            s,
            None,
            None,
            None,
            None,
            float(mon[:, j].sum()),
            float(mis[:, j].sum()),
            float(over[:, j].sum()),
            float(under[:, j].sum()),
            _f(composite[j]),
            _f(np.nanmax(vmax[:, j]) if np.isfinite(vmax[:, j]).any() else np.nan),
            _f(np.nanmin(vmin[:, j]) if np.isfinite(vmin[:, j]).any() else np.nan),
            0,
            0,
            0,
            0,
            1,
            None,
        )
        for j, s in enumerate(starts)
    ]
    with conn.cursor() as cur:
        cur.executemany(_V_UPSERT, out)
    return len(out)
