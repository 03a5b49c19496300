"""The abnormal-readings job: the rules over the last `days` complete local days, into the
inspection worklist (``anomaly_cases``, migration 12).

Once per local day, after the diagnostics (whose meter errors, mapping and multiplier flags
for the same window it reads), by the watermark ``anomalies``. Each listed meter keeps one
live case per kind: an open or assigned one is refreshed (score, rank, evidence, window); a
new one is opened otherwise. A case closed as false_positive for the same meter, kind and
`since` is not reopened (the inspector said no to that very finding).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from psycopg.types.json import Jsonb

from analytics.anomalies import AnomalyInput, Events, Rule, evaluate, load_rules, worklist_policy
from analytics.anomaly_score import Entry, score, worklist
from analytics.diagnostics import _voltages, bus_voltage
from analytics.energy import align_registers, interval_energy
from analytics.jobs import CUSTOMER, STEP, LineLossPolicy, _day_starts, _group_sum, area_groups
from analytics.store import STATUS_NAMES, AnalyticsStore, Grid, Topology
from ingest.live import case_payloads, notify

log = logging.getLogger(__name__)
JOB = "anomalies"
PHASES = {"voltage": ("32.7.0", "52.7.0", "72.7.0"), "current": ("31.7.0", "51.7.0", "71.7.0")}


@dataclass(frozen=True)
class AnomalyPolicy:
    lineloss: LineLossPolicy
    rules: dict[str, Rule]
    min_score: float = 2.0
    days: int = 14
    nominal_v: float = 220.0

    @classmethod
    def from_file(cls, lineloss: LineLossPolicy, path: str = "", **kw) -> AnomalyPolicy:
        args = (path,) if path else ()
        return cls(lineloss, load_rules(*args), worklist_policy(*args)["min_score"], **kw)


def run_anomalies(store: AnalyticsStore, policy: AnomalyPolicy, now: datetime) -> int:
    """One run when a new local day is complete; returns the cases opened or refreshed."""
    tz = ZoneInfo(policy.lineloss.timezone)
    settled = now - timedelta(seconds=policy.lineloss.settle_s)
    end = datetime.combine(settled.astimezone(tz).date(), time(), tz)
    start = datetime.combine((end - timedelta(days=policy.days)).date(), time(), tz)
    lo, hi = int(start.timestamp()), int(end.timestamp())
    conn = store.conn
    with conn.transaction():
        row = conn.execute(
            "SELECT extract(epoch FROM done_until)::int8 FROM analytics_watermarks WHERE job = %s",
            (JOB,),
        ).fetchone()
        if row and row[0] >= hi:
            return 0
        grid = Grid(lo, STEP, (hi - lo) // STEP)
        topo = store.topology(grid)
        written = 0
        if len(topo.device_ids):
            inp, area_of = load_input(store, policy, topo, tz, start, end)
            hits = evaluate(inp, policy.rules)
            sc = score(hits, policy.rules, len(topo.device_ids))
            entries = worklist(hits, policy.rules, sc, area_of, min_score=policy.min_score)
            written = _write_cases(store, topo, entries, area_of, start, end)
        conn.execute(
            "INSERT INTO analytics_watermarks (job, done_until) VALUES (%s, %s)"
            " ON CONFLICT (job) DO UPDATE SET done_until = EXCLUDED.done_until,"
            "  updated_at = now()",
            (JOB, end),
        )
    log.info("abnormal readings %s … %s: %d cases opened or refreshed", start, end, written)
    return written


def load_input(
    store: AnalyticsStore, policy: AnomalyPolicy, topo: Topology, tz: ZoneInfo, start, end
) -> tuple[AnomalyInput, np.ndarray]:
    """The rules' arrays from the database for the topology's window; the meters' last area
    (index into topo.area_names, −1: none)."""
    lp, grid = policy.lineloss, topo.grid
    n, T = len(topo.device_ids), grid.n
    limits = np.full(n, lp.register_modulus), np.full(n, lp.register_max_step)
    regs = store.registers(topo, lp.align_tolerance_s)
    energy, flags = interval_energy(regs, topo.multiplier, *limits)
    idx, ts, val = store.readings(
        topo.device_ids, grid.start - lp.align_tolerance_s, grid.end + lp.align_tolerance_s, "2.8.0"
    )
    exp_regs = align_registers(idx, ts, val, n, grid.start, STEP, T + 1, lp.align_tolerance_s)
    export, _ = interval_energy(exp_regs, topo.multiplier, *limits)
    volts = np.stack(
        [_voltages(store, topo, q, lp.align_tolerance_s) for q in PHASES["voltage"]], 1
    )
    amps = np.stack([_voltages(store, topo, q, lp.align_tolerance_s) for q in PHASES["current"]], 1)
    customer = (topo.role == CUSTOMER).any(axis=1)
    # the loss of each customer's (ledger) public area per interval, as the line-loss job has it
    groups = area_groups(topo, energy)
    sales, _ = _group_sum(energy, groups.group_of, groups.expected, len(groups.names))
    loss = groups.supply - sales
    g = groups.group_of
    cols = np.broadcast_to(np.arange(T), (n, T))
    area_loss = np.where(g >= 0, loss[np.maximum(g, 0), cols] if len(loss) else np.nan, np.nan)
    placed = topo.area >= 0
    last = np.where(placed.any(axis=1), T - 1 - np.argmax(placed[:, ::-1], axis=1), 0)
    area_of = np.where(placed.any(axis=1), topo.area[np.arange(n), last], -1).astype(np.int64)
    days = _day_starts(grid.start, grid.end, tz)
    day_of = np.searchsorted(days, grid.starts, side="right") - 1
    change = _multiplier_change(topo.multiplier)
    at = np.maximum(change, 1)
    rows = np.arange(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(
            change > 0, topo.multiplier[rows, at] / topo.multiplier[rows, at - 1], np.nan
        )
    inp = AnomalyInput(
        energy=energy, flags=flags, day_of=day_of, step=STEP, export=export, voltage=volts,
        current=amps, nominal_v=np.full(n, policy.nominal_v), consumer=customer,
        area_loss=np.where(customer[:, None], area_loss, np.nan),
        area_status=_area_status(store, topo, area_of),
        events=_events(store, topo),
        multiplier_change=change, multiplier_ratio=ratio,
        area_of=np.where(customer, area_of, -1),
        bus_voltage=np.where(customer[:, None], _own_bus(store, topo, groups, volts), np.nan),
        **_issue9(store, topo, end),
    )  # fmt: skip
    return inp, area_of


def _own_bus(store: AnalyticsStore, topo: Topology, groups, volts: np.ndarray) -> np.ndarray:
    """(n, T) the LV bus voltage of each meter's (ledger) public area per interval, as its
    total meter reads it: a single-phase meter's phase (its one voltage is 32.7.0 whatever
    the phase), the mean of the three for a three-phase one; NaN outside a public area."""
    n, T = volts.shape[0], volts.shape[2]
    if not len(groups.names):
        return np.full((n, T), np.nan)
    bus = np.stack([bus_voltage(topo, groups.names, volts[:, p]) for p in range(3)])
    g = groups.group_of
    own = bus[:, np.maximum(g, 0), np.broadcast_to(np.arange(T), (n, T))]  # (3, n, T)
    phase = np.array(store.phases(topo.device_ids), dtype=object)
    on = np.select([phase == "A", phase == "B", phase == "C"], [0, 1, 2], -1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all three unknown: NaN, as it should
        mean = np.nanmean(own, axis=0)
    single = np.take_along_axis(own, np.maximum(on, 0)[None, :, None], axis=0)[0]
    return np.where(g >= 0, np.where((on >= 0)[:, None], single, mean), np.nan)


def _multiplier_change(mult: np.ndarray) -> np.ndarray:
    """(n,) the last interval at which the ledger's multiplier changed (−1: none)."""
    changed = np.zeros(mult.shape, dtype=bool)
    changed[:, 1:] = (mult[:, 1:] != mult[:, :-1]) & np.isfinite(mult[:, 1:] * mult[:, :-1])
    T = mult.shape[1]
    return np.where(changed.any(axis=1), T - 1 - np.argmax(changed[:, ::-1], axis=1), -1)


def _area_status(store: AnalyticsStore, topo: Topology, area_of: np.ndarray) -> np.ndarray:
    grid = topo.grid
    rows = store.conn.execute(
        "SELECT name, extract(epoch FROM start)::int8, status FROM lineloss"
        " WHERE level = 'area' AND period = '15min'"
        "   AND start >= to_timestamp(%s) AND start < to_timestamp(%s)",
        (grid.start, grid.end),
    ).fetchall()
    status = np.zeros((len(topo.area_names) + 1, grid.n), dtype=np.int8)  # last row: none
    if rows:
        where = {name: i for i, name in enumerate(topo.area_names)}
        a = np.array([where.get(r[0], len(topo.area_names)) for r in rows])
        t = (np.array([r[1] for r in rows]) - grid.start) // grid.step
        status[a, t] = [STATUS_NAMES.index(r[2]) for r in rows]
    return status[area_of]


def _events(store: AnalyticsStore, topo: Topology) -> Events:
    grid = topo.grid
    rows = store.conn.execute(
        "SELECT device_id, extract(epoch FROM ts)::int8, kind,"
        " COALESCE((detail->>'drift_s')::float8, 'NaN')"
        " FROM events WHERE device_id = ANY(%s) AND kind IN ('clock_drift', 'cover_open',"
        " 'power_down') AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)",
        ([int(d) for d in topo.device_ids], grid.start, grid.end),
    ).fetchall()
    dev = np.array([r[0] for r in rows], dtype=np.int64)
    return Events(
        meter=np.searchsorted(topo.device_ids, dev).astype(np.int64),
        t=(np.array([r[1] for r in rows], dtype=np.int64) - grid.start) // grid.step,
        kind=np.array([r[2] for r in rows], dtype=str),
        value=np.array([r[3] for r in rows], dtype=float),
    )


def _issue9(store: AnalyticsStore, topo: Topology, end) -> dict[str, np.ndarray]:
    """The diagnostics' results for the window ending at `end` as per-meter arrays."""
    n = len(topo.device_ids)
    out = {
        "meter_error_pct": np.full(n, np.nan),
        "meter_error_flagged": np.zeros(n, bool),
        "misassigned": np.zeros(n, bool),
        "wrong_multiplier": np.zeros(n, bool),
    }
    conn = store.conn
    queries = {
        "meter_errors": "SELECT device_id, error_pct, flagged FROM meter_errors"
        " WHERE window_end = %s",
        "misassigned": "SELECT device_id, flagged FROM mapping_flags WHERE window_end = %s",
        "wrong_multiplier": "SELECT device_id, bool_or(flagged) FROM multiplier_flags"
        " WHERE window_end = %s GROUP BY device_id",
    }
    for what, sql in queries.items():
        rows = conn.execute(sql, (end,)).fetchall()
        if not rows:
            continue
        cols = list(zip(*rows, strict=True))
        ids = np.array(cols[0], dtype=np.int64)
        row = np.minimum(np.searchsorted(topo.device_ids, ids), n - 1)
        ok = topo.device_ids[row] == ids
        if what == "meter_errors":
            pct = np.array([np.nan if v is None else v for v in cols[1]], dtype=float)
            out["meter_error_pct"][row[ok]] = pct[ok]
            out["meter_error_flagged"][row[ok]] = np.array(cols[2], dtype=bool)[ok]
        else:
            out[what][row[ok]] = np.array(cols[1], dtype=bool)[ok]
    return out


def _write_cases(store, topo: Topology, entries: list[Entry], area_of, start, end) -> int:
    starts = topo.grid.starts
    written = 0
    opened: list[tuple] = []  # announced on the live feed as alarms, in this transaction
    for e in entries:  # the worklist's rows: one statement each
        since = datetime.fromtimestamp(int(starts[e.since]), UTC) if e.since >= 0 else None
        area = topo.area_names[e.area] if e.area >= 0 else None
        dev = int(topo.device_ids[e.meter])
        evidence = Jsonb(
            {k: {**v, "first": _at(starts, v["first"])} for k, v in e.evidence.items()}
        )
        values = (e.score, e.theft_score, e.rank, since, evidence, area, start, end)
        updated = store.conn.execute(
            "UPDATE anomaly_cases SET score = %s, theft_score = %s, rank = %s, since = %s,"
            " evidence = %s, area = %s, window_start = %s, window_end = %s, updated_at = now()"
            " WHERE device_id = %s AND kind = %s AND status IN ('open', 'assigned')",
            (*values, dev, e.kind),
        ).rowcount
        if not updated:
            refused = store.conn.execute(
                "SELECT 1 FROM anomaly_cases WHERE device_id = %s AND kind = %s"
                " AND status = 'false_positive' AND since IS NOT DISTINCT FROM %s",
                (dev, e.kind, since),
            ).fetchone()
            if refused:
                continue
            case = store.conn.execute(
                "INSERT INTO anomaly_cases (score, theft_score, rank, since, evidence, area,"
                " window_start, window_end, device_id, kind)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (*values, dev, e.kind),
            ).fetchone()[0]
            store.conn.execute(
                "INSERT INTO anomaly_case_history (case_id, to_status, note)"
                " VALUES (%s, 'open', 'opened by the anomalies job')",
                (case,),
            )
            opened.append((case, dev, e.kind, area, e.score))
        written += 1
    if opened:
        notify(store.conn, case_payloads(opened))
    return written


def _at(starts: np.ndarray, k: int | None) -> str | None:
    if k is None or k < 0 or k >= len(starts):
        return None
    return datetime.fromtimestamp(int(starts[k]), UTC).isoformat()
