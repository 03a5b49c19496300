"""Writing the power-quality job's results (migration 10, ingest/schema_pq.py): the day rows
from arrays, the weeks and months as sums of their days (SQL), the composite of every period
from its class rows (analytics.power_quality.composite_rate)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

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


def _vrows(kind, names, phases, start, q: pq.Qualification, c, nominal, up, low, classes):
    out = []
    for i, name in enumerate(names):
        out.append(
            (
                kind,
                name,
                phases[i],
                "day",
                start,
                None if nominal is None else _f(nominal[i]),
                None if up is None else _f(up[i]),
                None if low is None else _f(low[i]),
                None if classes is None else classes[i],
                float(q.monitored[i, 0]),
                float(q.missing[i, 0]),
                float(q.over[i, 0]),
                float(q.under[i, 0]),
                _f(q.rate[i, 0]),
                _f(q.max_v[i, 0]),
                _f(q.min_v[i, 0]),
                int(c["means"][i]),
                int(c["within"][i]),
                int(c["outside_wide"][i]),
                int(c["incomplete"][i]),
                1,
                None,
            )
        )
    return out


def write_day(
    conn: psycopg.Connection,
    start: datetime,
    *,
    monitors,
    meters,
    areas,
    classes,
    unbalance,
    weights: tuple[float, ...],
) -> int:
    mon, has, up_m, low_m, q_m, c_m = monitors
    keep = np.flatnonzero(has)
    sub = pq.Qualification(
        **{f: getattr(q_m, f)[keep] for f in pq.Qualification.__dataclass_fields__}
    )
    rows = _vrows(
        "monitor",
        [mon.names[i] for i in keep],
        ["-"] * len(keep),
        start,
        sub,
        {k: v[keep] for k, v in c_m.items()},
        mon.nominal[keep],
        up_m[keep],
        low_m[keep],
        ["ABCD"[k] if k >= 0 else None for k in mon.class_of[keep]],
    )
    met, prow, up, low, nominal, q_v, c_v = meters
    names = [met.names[i] for i in prow.meter]
    rows += _vrows("meter", names, prow.label, start, q_v, c_v, nominal, up, low, None)
    area_names, q_a, c_a = areas
    dash = ["-"] * len(area_names)
    rows += _vrows("area", area_names, dash, start, q_a, c_a, None, None, None, None)
    per_class = classes
    class_of = mon.class_of[keep]
    c_cls = {
        k: np.bincount(class_of[class_of >= 0], v[keep][class_of >= 0], 4) for k, v in c_m.items()
    }
    rows += _vrows(
        "class", list("ABCD"), ["-"] * 4, start, per_class, c_cls, None, None, None, None
    )
    with conn.cursor() as cur:
        cur.executemany(_V_UPSERT, rows)
    n = len(rows) + _write_composite(conn, "day", [start], weights)
    sel = unbalance["meters"]
    urows = []
    for quantity in ("voltage", "current") if len(sel) else ():
        u = unbalance[quantity]
        for j, i in enumerate(sel):
            nv, within = int(u["n_values"][j]), int(u["within_normal"][j])
            share = within / nv * 100 if nv else None
            urows.append(
                (
                    met.names[i],
                    quantity,
                    "day",
                    start,
                    nv,
                    int(u["n_sequence"][j]),
                    within,
                    int(u["beyond_short"][j]),
                    _f(u["max_pct"][j]),
                    share,
                    None,
                    1,
                )
            )
    with conn.cursor() as cur:
        cur.executemany(_U_UPSERT, urows)
    return n + len(urows)


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
