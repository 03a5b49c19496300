"""Loading for the power-quality job: the subjects of a local day (voltage monitors, meters
with their placement in force at the day's start) and their voltages bucketed on a grid.

Monitors store one-minute voltages (32.7.0, collectors/modbus/voltage_monitor.py): a 60-s
grid. Meters store 15-min curve voltages (concentrators) or instantaneous polls: a 900-s
grid, the mean of the readings in each 15 minutes (a poll every 5 min gives a 15-min mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

from analytics.store import AnalyticsStore

PHASE_VOLTAGE = ("32.7.0", "52.7.0", "72.7.0")
PHASE_CURRENT = ("31.7.0", "51.7.0", "71.7.0")
# angles (DLMS, lagging positive): U(L2)/U(L1), U(L3)/U(L1), then I(Lk)/U(Lk)
ANGLES_U = ("81.7.1", "81.7.2")
ANGLES_I = ("81.7.4", "81.7.15", "81.7.26")


@dataclass
class Monitors:
    ids: np.ndarray  # (m,) device ids
    names: list[str]
    nominal: np.ndarray  # (m,) V: attribute nominal_voltage, else the monitor's own, else site
    class_of: np.ndarray  # (m,) 0…3 = A…D, −1 unknown
    commissioned: np.ndarray  # (m,) unix seconds, +inf: not known


@dataclass
class Meters:
    ids: np.ndarray  # (n,)
    names: list[str]
    placed: np.ndarray  # (n,) bool: a metering point in force at the day's start
    three_phase: np.ndarray  # (n,) bool
    phase: list[str]  # the point's phase (A|B|C|ABC); unplaced: ABC
    area: list[str | None]
    system_v: np.ndarray  # (n,) system nominal V (for the limits table)
    nominal: np.ndarray  # (n,) phase-to-neutral V the meter should see (secondary)
    commissioned: np.ndarray  # (n,) unix seconds, −inf: not known (expected when placed)


def monitors(conn: psycopg.Connection, site_nominal: float) -> Monitors:
    rows = conn.execute(
        "SELECT d.id, d.name, (d.attributes->>'nominal_voltage')::float8, s.nominal_v,"
        "  s.monitoring_class,"
        "  extract(epoch FROM (d.attributes->>'commissioned')::timestamptz)::float8"
        " FROM devices d LEFT JOIN LATERAL (SELECT nominal_v, monitoring_class"
        "  FROM voltage_daily_stats v WHERE v.device_id = d.id ORDER BY day DESC LIMIT 1) s"
        "  ON true WHERE d.kind = 'voltage_monitor' ORDER BY d.name"
    ).fetchall()
    classes = {c: i for i, c in enumerate("ABCD")}
    return Monitors(
        np.array([r[0] for r in rows], dtype=np.int64),
        [r[1] for r in rows],
        np.array([r[2] or r[3] or site_nominal for r in rows], dtype=float),
        np.array([classes.get(r[4], -1) for r in rows], dtype=np.int64),
        np.array([np.inf if r[5] is None else r[5] for r in rows], dtype=float),
    )


def meters(conn: psycopg.Connection, at: int, site_nominal: float) -> Meters:
    """Every meter; its metering point in force at `at`. System nominal: a feeder head its
    feeder's kV; a three-phase point in an area the area's LV kV; a single-phase one that
    over √3; an unplaced meter the site's nominal (single-phase). The phase voltage a meter
    should see: its own `nominal_voltage` attribute, else the site's (LV), else the feeder's
    phase voltage over the PT ratio (a head)."""
    rows = conn.execute(
        "SELECT d.id, d.name, (d.attributes->>'nominal_voltage')::float8, mp.role,"
        "  coalesce(mp.phase, 'ABC'), mp.pt_ratio, a.name, a.lv_voltage_kv,"
        "  f.voltage_kv,"
        "  extract(epoch FROM (d.attributes->>'commissioned')::timestamptz)::float8"
        " FROM devices d LEFT JOIN metering_points mp ON mp.device_id = d.id"
        "  AND mp.valid_from <= to_timestamp(%s)"
        "  AND (mp.valid_to IS NULL OR mp.valid_to > to_timestamp(%s))"
        " LEFT JOIN areas a ON a.id = mp.area_id LEFT JOIN feeders f ON f.id = mp.feeder_id"
        " WHERE d.kind = 'meter' ORDER BY d.name",
        (at, at),
    ).fetchall()
    system, nominal = [], []
    for _id, _name, attr, role, phase, pt, _area, lv_kv, feeder_kv, _since in rows:
        if role == "feeder_head":
            system.append(feeder_kv * 1000)
            nominal.append(attr or feeder_kv * 1000 / np.sqrt(3) / pt)
        elif role is not None:
            lv = lv_kv * 1000
            system.append(lv if phase == "ABC" else lv / np.sqrt(3))
            nominal.append(attr or site_nominal)
        else:
            system.append(site_nominal)
            nominal.append(attr or site_nominal)
    return Meters(
        np.array([r[0] for r in rows], dtype=np.int64),
        [r[1] for r in rows],
        np.array([r[3] is not None for r in rows], dtype=bool),
        np.array([r[4] == "ABC" for r in rows], dtype=bool),
        [r[4] for r in rows],
        [r[6] for r in rows],
        np.array(system, dtype=float),
        np.array(nominal, dtype=float),
        np.array([-np.inf if r[9] is None else r[9] for r in rows], dtype=float),
    )


def bucket_mean(
    idx: np.ndarray, ts: np.ndarray, value: np.ndarray, n: int, lo: int, step: int, T: int
) -> np.ndarray:
    """Long-form readings → (n, T) means per bucket [lo + k·step, lo + (k+1)·step); NaN where
    a bucket holds none."""
    k = (ts - lo) // step
    ok = (k >= 0) & (k < T)
    flat = idx[ok].astype(np.int64) * T + k[ok]
    total = np.bincount(flat, weights=value[ok], minlength=n * T)
    count = np.bincount(flat, minlength=n * T)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out.reshape(n, T)


def series(
    store: AnalyticsStore, ids: np.ndarray, quantities: tuple[str, ...], lo: int, step: int, T: int
) -> np.ndarray:
    """(len(quantities), n, T) bucket means of each quantity over [lo, lo + T·step)."""
    out = np.full((len(quantities), len(ids), T), np.nan)
    if len(ids) == 0:
        return out
    for q, quantity in enumerate(quantities):
        idx, ts, value = store.readings(ids, lo, lo + T * step - 1, quantity)
        out[q] = bucket_mean(idx, ts, value, len(ids), lo, step, T)
    return out


def monitor_stats(conn: psycopg.Connection, day) -> dict[int, tuple]:
    """The monitors' own statistics of a local day: device id → (monitored, over, under,
    upper_v, lower_v)."""
    rows = conn.execute(
        "SELECT device_id, monitored_min, over_min, under_min, upper_v, lower_v"
        " FROM voltage_daily_stats WHERE day = %s",
        (day,),
    ).fetchall()
    return {r[0]: r[1:] for r in rows}
