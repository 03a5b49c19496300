"""The daily diagnostics job: meter errors (least squares on each public area's energy
balance), the meter-to-area check (voltage correlation) and the wrong-multiplier check
(`analytics.multiplier_check`), over the last `days` complete local days, into
``meter_errors``, ``mapping_flags`` and ``multiplier_flags``.

It runs once per local day: the watermark ``diagnostics`` holds the end of the last window
done; a run before the next local midnight (plus the settle delay) has nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from analytics.energy import align_registers, interval_energy
from analytics.jobs import AREA_TOTAL, CUSTOMER, STEP, LineLossPolicy, _group_sum, area_groups
from analytics.mapping import check_meter_areas
from analytics.meter_error import estimate_meter_errors, line_drop_slope
from analytics.multiplier_check import implausible_factors, multiplier_steps
from analytics.store import AnalyticsStore, Grid, Topology

JOB = "diagnostics"
REGISTER_RESOLUTION = 0.01  # kWh: the last digit of a XXXXXX.XX register (DL/T 645)
FINEST_DIGITS = 4  # DL/T 698.45 high-precision energy: 0.0001 kWh
VOLTAGE = {"A": "32.7.0", "B": "52.7.0", "C": "72.7.0", "ABC": "32.7.0"}
# Letter classes of EN 50470-3 / GB/T 17215 (A, B, C, D) as percentages
LETTER_CLASS = {"A": 2.0, "B": 1.0, "C": 0.5, "D": 0.2}


@dataclass(frozen=True)
class DiagnosticsPolicy:
    lineloss: LineLossPolicy  # zone, settle delay, register and alignment settings
    days: int = 14
    default_accuracy_pct: float = 2.0  # a meter without a known class
    max_ci_pct: float = 2.0  # an error's CI half-width above it: not identifiable
    mapping_margin: float = 0.1  # another area's correlation must exceed the own by this
    mapping_min_overlap: int = 96  # voltage steps both series need in common
    multiplier_tolerance: float = 0.5  # a loss step within (1 ± it) × the predicted one
    multiplier_implausible_pct: float = 20.0  # an estimated error beyond it: a multiplier
    service_loss: bool = True  # each customer's own service-line I²R in the meter-error model
    drop_prior_sd: float = 0.15  # prior on that loss from the meter's own drop; 0: none


def accuracy_pct(classes: list[str | None], default: float) -> np.ndarray:
    """'0.5S' → 0.5, '2' → 2, 'B' → 1; unknown or absent → `default`."""
    out = np.full(len(classes), default)
    for i, c in enumerate(classes):  # one per meter, parsing its ledger text
        text = (c or "").strip().upper()
        number = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)S?", text)
        if number:
            out[i] = float(number.group(1))
        elif text in LETTER_CLASS:
            out[i] = LETTER_CLASS[text]
    return out


def run_diagnostics(store: AnalyticsStore, policy: DiagnosticsPolicy, now: datetime) -> int:
    """One run: the window's results when a new local day is complete; returns rows written."""
    tz = ZoneInfo(policy.lineloss.timezone)
    settled = now - timedelta(seconds=policy.lineloss.settle_s)
    end = datetime.combine(settled.astimezone(tz).date(), time(), tz)
    start = end - timedelta(days=policy.days)
    start = datetime.combine(start.date(), time(), tz)  # local midnight across a DST change
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
        written = _meter_errors(store, policy, topo, start, end)
        written += _mapping(store, policy, topo, start, end)
        written += _multipliers(store, policy, topo, start, end)
        conn.execute(
            "INSERT INTO analytics_watermarks (job, done_until) VALUES (%s, %s)"
            " ON CONFLICT (job) DO UPDATE SET done_until = EXCLUDED.done_until,"
            "  updated_at = now()",
            (JOB, end),
        )
    return written


def _meter_errors(
    store: AnalyticsStore, policy: DiagnosticsPolicy, topo: Topology, start, end
) -> int:
    lp = policy.lineloss
    n = len(topo.device_ids)
    regs = store.registers(topo, lp.align_tolerance_s)
    energy, _ = interval_energy(
        regs, topo.multiplier, np.full(n, lp.register_modulus), np.full(n, lp.register_max_step)
    )
    groups = area_groups(topo, energy)
    classes = store.accuracy_classes(topo.device_ids)
    acc = accuracy_pct(classes, policy.default_accuracy_pct)
    last_mult = _last(topo.multiplier, ~np.isnan(topo.multiplier))
    quantum = register_resolution(regs) * last_mult
    volts = bus = None
    if policy.service_loss:  # a meter without a voltage curve falls back to κ·E²
        volts = _voltages(store, topo, VOLTAGE["A"], lp.align_tolerance_s)
        count = (~np.isnan(volts)).sum(axis=1)
        mean = np.where(count > 0, np.nansum(volts, axis=1) / np.maximum(count, 1), 230.0)
        if policy.drop_prior_sd > 0:  # each customer against its phase's bus voltage
            phase = np.array(store.phases(topo.device_ids), dtype=object)
            tol = lp.align_tolerance_s
            per_phase = [volts] + [_voltages(store, topo, VOLTAGE[p], tol) for p in ("B", "C")]
            bus = np.stack([bus_voltage(topo, groups.names, v) for v in per_phase])  # (3, A, T)
            on = np.select([phase == "B", phase == "C"], [1, 2], 0)  # A and ABC: phase A
        raw = volts  # the drop slopes from what was read, not from the filled means
        volts = np.where(np.isnan(volts), mean[:, None], volts)
    rows = []
    for a, name in enumerate(groups.names):  # one least-squares problem per area
        member = groups.group_of == a
        idx = np.flatnonzero(member.any(axis=1))
        if len(idx) == 0:
            continue
        # a member's energy while in the area (NaN: missing, the row is dropped), 0 elsewhere
        e = np.where(member[idx], energy[idx], 0.0)
        own_bus = None if bus is None else bus[on[idx], a]  # (members, T)
        prior = own_bus is not None and not np.isnan(own_bus).all()
        in_area = np.where(member[idx], 1.0, np.nan)  # the slope over its time in the area
        rho = line_drop_slope(own_bus, raw[idx] * in_area, e) if prior else None
        result = estimate_meter_errors(
            groups.supply[a],
            e,
            acc[idx],
            max_ci_pct=policy.max_ci_pct,
            quantum=quantum[idx],
            service_loss=policy.service_loss,
            service_voltage=None if volts is None else volts[idx],
            bus_voltage=own_bus if prior else None,
            drop_prior_sd=policy.drop_prior_sd or 1.0,
            drop_slope=rho,
        )
        for k, i in enumerate(idx):  # one result row per member
            rows.append(
                (
                    name,
                    int(topo.device_ids[i]),
                    start,
                    end,
                    _num(result.error_pct[k]),
                    _num(result.ci_low[k]),
                    _num(result.ci_high[k]),
                    bool(result.identifiable[k]),
                    bool(result.flagged[k]),
                )
            )
    with store.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter_errors (area, device_id, window_start, window_end, error_pct,"
            " ci_low, ci_high, identifiable, flagged) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (area, device_id, window_end) DO UPDATE SET"
            " error_pct = EXCLUDED.error_pct, ci_low = EXCLUDED.ci_low,"
            " ci_high = EXCLUDED.ci_high, identifiable = EXCLUDED.identifiable,"
            " flagged = EXCLUDED.flagged, computed_at = now()",
            rows,
        )
    return len(rows)


def _mapping(store: AnalyticsStore, policy: DiagnosticsPolicy, topo: Topology, start, end) -> int:
    grid = topo.grid
    groups = area_groups(topo, np.zeros(topo.role.shape))
    names = groups.names
    public = np.append(np.where(topo.area_public, np.cumsum(topo.area_public) - 1, -1), -1)
    area = public[topo.area]  # (n, T) public-area group or −1
    phases = np.array(store.phases(topo.device_ids), dtype=object)
    rows = []
    # a single-phase meter has one voltage, 32.7.0 whatever its phase (DL/T 645: 电压 A相)
    own = _voltages(store, topo, VOLTAGE["A"], policy.lineloss.align_tolerance_s)
    for phase in ("A", "B", "C"):  # each phase's meters against the totals' same phase
        quantity = VOLTAGE[phase]
        on = (phases == phase) | ((phases == "ABC") & (phase == "A"))
        volts = _voltages(store, topo, quantity, policy.lineloss.align_tolerance_s)
        total = (topo.role == AREA_TOTAL) & (area >= 0)
        ref = np.full((len(names), grid.n), np.nan)
        r_dev, r_t = np.nonzero(total)
        ref[area[r_dev, r_t], r_t] = volts[r_dev, r_t]
        customers = np.flatnonzero(on & (topo.role == CUSTOMER).any(axis=1))
        if len(customers) == 0 or len(names) == 0:
            continue
        last_area = _last(area[customers].astype(float), area[customers] >= 0)
        assigned = np.nan_to_num(last_area, nan=-1).astype(np.int64)
        res = check_meter_areas(
            own[customers],
            ref,
            assigned,
            margin=policy.mapping_margin,
            min_overlap=policy.mapping_min_overlap,
        )
        for k, i in enumerate(customers):
            if assigned[k] < 0:
                continue
            best = int(res.best_area[k])
            rows.append(
                (
                    int(topo.device_ids[i]),
                    start,
                    end,
                    names[assigned[k]],
                    _num(res.own_corr[k]),
                    names[best] if best >= 0 else None,
                    _num(res.best_corr[k]),
                    int(res.own_overlap[k]),
                    bool(res.flagged[k]),
                )
            )
    with store.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO mapping_flags (device_id, window_start, window_end, assigned_area,"
            " own_corr, best_area, best_corr, overlap, flagged)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (device_id, window_end) DO UPDATE SET"
            " assigned_area = EXCLUDED.assigned_area, own_corr = EXCLUDED.own_corr,"
            " best_area = EXCLUDED.best_area, best_corr = EXCLUDED.best_corr,"
            " overlap = EXCLUDED.overlap, flagged = EXCLUDED.flagged, computed_at = now()",
            rows,
        )
    return len(rows)


def bus_voltage(topo: Topology, names: list[str], volts: np.ndarray) -> np.ndarray:
    """(A, T) each public area's LV bus voltage: its total meter's (the mean of two during a
    replacement), NaN where none reported."""
    public = np.append(np.where(topo.area_public, np.cumsum(topo.area_public) - 1, -1), -1)
    area = np.where(topo.role == AREA_TOTAL, public[topo.area], -1)
    dev, t = np.nonzero((area >= 0) & ~np.isnan(volts))
    total = np.zeros((len(names), topo.grid.n))
    count = np.zeros_like(total)
    np.add.at(total, (area[dev, t], t), volts[dev, t])
    np.add.at(count, (area[dev, t], t), 1.0)
    return np.where(count > 0, total / np.maximum(count, 1.0), np.nan)


def register_resolution(registers: np.ndarray) -> np.ndarray:
    """(n,) each meter's register resolution (kWh) from its values: 10^−d for the fewest
    digits 2 ≤ d ≤ 4 that all its values have (0.01 for a meter without values; never
    coarser, so that a standing register is not taken for a 1 kWh one)."""
    present = ~np.isnan(registers)
    digits = np.full(len(registers), FINEST_DIGITS)
    for d in range(FINEST_DIGITS - 1, 1, -1):  # the finest first; two passes
        scaled = np.where(present, registers, 0.0) * 10.0**d
        whole = np.abs(scaled - np.round(scaled)) <= 1e-3  # float error ≪ a thousandth digit
        digits = np.where(whole.all(axis=1), d, digits)
    return np.where(present.any(axis=1), 10.0**-digits, REGISTER_RESOLUTION)


def _voltages(store: AnalyticsStore, topo: Topology, quantity: str, tolerance: int) -> np.ndarray:
    """(n, T) the devices' `quantity` sampled at the intervals' starts."""
    grid = topo.grid
    idx, ts, value = store.readings(
        topo.device_ids, grid.start - tolerance, grid.end + tolerance, quantity
    )
    n = len(topo.device_ids)
    return align_registers(idx, ts, value, n, grid.start, grid.step, grid.n, tolerance)


def _last(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row the value at the last True of `mask` (NaN where none)."""
    T = mask.shape[1]
    pos = T - 1 - np.argmax(mask[:, ::-1], axis=1)
    out = values[np.arange(len(values)), pos].astype(float)
    return np.where(mask.any(axis=1), out, np.nan)


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _multipliers(
    store: AnalyticsStore, policy: DiagnosticsPolicy, topo: Topology, start, end
) -> int:
    """The wrong-multiplier check: a step in a public area's loss at a ledger multiplier
    change, and estimated errors (written above) that only a wrong multiplier explains."""
    lp = policy.lineloss
    n = len(topo.device_ids)
    regs = store.registers(topo, lp.align_tolerance_s)
    one = np.where(np.isnan(topo.multiplier), np.nan, 1.0)
    limits = np.full(n, lp.register_modulus), np.full(n, lp.register_max_step)
    secondary, _ = interval_energy(regs, one, *limits)
    groups = area_groups(topo, secondary * topo.multiplier)
    sales, _ = _group_sum(secondary * topo.multiplier, groups.group_of, groups.expected,
                          len(groups.names))  # fmt: skip
    loss = groups.supply - sales
    public = np.append(np.where(topo.area_public, np.cumsum(topo.area_public) - 1, -1), -1)
    area = public[topo.area]
    placed = (topo.role == AREA_TOTAL) | (topo.role == CUSTOMER)
    sign = np.where((topo.role == AREA_TOTAL).any(axis=1), 1.0, -1.0)
    steps = multiplier_steps(
        loss, secondary, topo.multiplier, np.where(placed, area, -1), sign,
        tolerance=policy.multiplier_tolerance,
    )  # fmt: skip
    starts = topo.grid.starts
    rows = [
        (int(topo.device_ids[i]), groups.names[g], start, end, "step",
         datetime.fromtimestamp(int(starts[k]), tz=start.tzinfo), _num(steps.before[c]),
         _num(steps.after[c]), _num(steps.expected[c]), _num(steps.observed[c]),
         _num(steps.stderr[c]), None, None, bool(steps.flagged[c]))
        for c, (i, g, k) in enumerate(zip(steps.meter, steps.area, steps.at, strict=True))
    ]  # fmt: skip
    est = store.conn.execute(
        "SELECT e.device_id, e.area, e.error_pct FROM meter_errors e"
        " WHERE e.window_end = %s AND e.error_pct IS NOT NULL",
        (end,),
    ).fetchall()
    if est:
        ids = np.array([r[0] for r in est])
        row = np.searchsorted(topo.device_ids, ids)
        mult = _last(topo.multiplier, ~np.isnan(topo.multiplier))[row]
        err = np.array([r[2] for r in est], dtype=float)
        flagged, implied = implausible_factors(
            err, mult, implausible_pct=policy.multiplier_implausible_pct
        )
        for k in np.flatnonzero(flagged):  # only the suspects: the rest is in meter_errors
            rows.append((int(ids[k]), est[k][1], start, end, "factor", start, None,
                         float(mult[k]), None, None, None, float(err[k]), float(implied[k]),
                         True))  # fmt: skip
    with store.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO multiplier_flags (device_id, area, window_start, window_end,"
            " check_kind, at, multiplier_before, multiplier_after, expected_jump,"
            " observed_jump, stderr, error_pct, implied_multiplier, flagged)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (device_id, window_end, check_kind, at) DO UPDATE SET"
            " area = EXCLUDED.area, multiplier_before = EXCLUDED.multiplier_before,"
            " multiplier_after = EXCLUDED.multiplier_after,"
            " expected_jump = EXCLUDED.expected_jump, observed_jump = EXCLUDED.observed_jump,"
            " stderr = EXCLUDED.stderr, error_pct = EXCLUDED.error_pct,"
            " implied_multiplier = EXCLUDED.implied_multiplier, flagged = EXCLUDED.flagged,"
            " computed_at = now()",
            rows,
        )
    return len(rows)
