"""The analytics store: loads topology and registers for a window of the 15-min grid into numpy
arrays, and writes results back. Synchronous (psycopg); the job runs it in a thread.

Topology is read straight from the migration-7 tables: for each device placed in the window,
per interval, the metering point *in force*: the one valid at the interval's start, or else
one that begins inside the interval (a meter fitted mid-interval by a replacement is a member
of the interval it was fitted in, as is the meter it replaced: `pin_replacement` then gives
each its exact share). A device is *expected* in an interval when a point places it there and
it was commissioned (``devices.attributes.commissioned``) by the interval's start.

Registers come out by binary COPY straight into arrays (`analytics.pgbinary`), long form, and
are aligned to the boundaries by `analytics.energy.align_registers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from analytics import pgbinary
from analytics.energy import align_registers, pin_replacements

ENERGY = "1.8.0"
FROZEN_ENERGY = "1.8.0*d"  # the daily frozen energy register (ingest/quantities.toml)
# Estimated (VEE) and suspect (failed a plausibility rule) values are not meter reads to
# balance an area on; re-reads (补抄) and clock-suspect ones are (ingest.model.Quality).
EXCLUDED_QUALITY = 1 | 4

ROLES = ("feeder_head", "area_total", "customer")
NONE = -1


@dataclass(frozen=True)
class Grid:
    """T intervals of `step` seconds from `start` (unix seconds, UTC)."""

    start: int
    step: int
    n: int

    @property
    def end(self) -> int:
        return self.start + self.step * self.n

    @property
    def boundaries(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.n + 1, dtype=np.int64)

    @property
    def starts(self) -> np.ndarray:
        return self.boundaries[:-1]


@dataclass
class Topology:
    """Per device (row) and interval (column) what the grid's tables say; NONE where nothing."""

    grid: Grid
    device_ids: np.ndarray  # (n,) int
    device_names: list[str]
    role: np.ndarray  # (n, T) int8: index into ROLES or NONE
    area: np.ndarray  # (n, T) int32: index into area_names (area_total, customer) or NONE
    feeder: np.ndarray  # (n, T) int32: index into feeder_names (feeder_head) or NONE
    multiplier: np.ndarray  # (n, T) float: NaN where not placed
    expected: np.ndarray  # (n, T) bool: placed and commissioned
    area_names: list[str]
    area_feeder: np.ndarray  # (A,) index into feeder_names
    area_public: np.ndarray  # (A,) bool
    area_kv: np.ndarray  # (A,) LV voltage
    feeder_names: list[str]
    feeder_kv: np.ndarray  # (F,)
    replacements: list[Replacement] = field(default_factory=list)


@dataclass(frozen=True)
class Replacement:
    old: int  # device row
    new: int
    at: int
    old_final: float
    new_first: float


STATUS_NAMES = ("not_computable", "negative", "normal", "high")  # analytics.lineloss.Status

COUNTS = ("present", "expected", "supply_present", "supply_expected")
_LINELOSS_IN = """
CREATE TEMP TABLE IF NOT EXISTS lineloss_in (
    name_idx int4, start int8, supply float8, sales float8, loss float8, rate float8,
    coverage float8, status int2, present int4, expected int4, supply_present int4,
    supply_expected int4
) ON COMMIT DELETE ROWS
"""


class AnalyticsStore:
    """Loads arrays and writes results on one psycopg connection (the caller owns it)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # --- topology -----------------------------------------------------------------------

    def topology(self, grid: Grid, *, area: str | None = None) -> Topology:
        """The topology in force over `grid`; `area`: only that area's metering points."""
        T = grid.n
        areas = self.conn.execute(
            "SELECT a.id, a.name, a.feeder_id, a.kind = 'public', a.lv_voltage_kv"
            " FROM areas a ORDER BY a.id"
        ).fetchall()
        feeders = self.conn.execute(
            "SELECT id, name, voltage_kv FROM feeders ORDER BY id"
        ).fetchall()
        feeder_ids = np.array([f[0] for f in feeders], dtype=np.int64)
        area_ids = np.array([a[0] for a in areas], dtype=np.int64)
        points = self.conn.execute(
            "SELECT mp.device_id, d.name, mp.role, COALESCE(mp.area_id, 0),"
            " COALESCE(mp.feeder_id, 0), mp.multiplier,"
            " extract(epoch FROM mp.valid_from)::float8,"
            " COALESCE(extract(epoch FROM mp.valid_to)::float8, 'Infinity'),"
            " COALESCE(extract(epoch FROM (d.attributes->>'commissioned')::timestamptz)::float8,"
            "          '-Infinity')"
            " FROM metering_points mp JOIN devices d ON d.id = mp.device_id"
            " WHERE mp.valid_from < to_timestamp(%s)"
            "   AND (mp.valid_to IS NULL OR mp.valid_to > to_timestamp(%s))"
            "   AND (%s::text IS NULL OR mp.area_id = (SELECT id FROM areas WHERE name = %s))"
            " ORDER BY mp.device_id, mp.valid_from",
            (grid.end, grid.start, area, area),
        ).fetchall()
        if points:
            dev, names, role, area_id, feeder_id, mult, vfrom, vto, comm = map(
                list, zip(*points, strict=True)
            )
        else:
            dev = names = role = area_id = feeder_id = mult = vfrom = vto = comm = []
        dev_arr = np.array(dev, dtype=np.int64)
        device_ids, point_dev = np.unique(dev_arr, return_inverse=True)
        first = np.unique(point_dev, return_index=True)[1] if len(dev_arr) else np.array([], int)
        device_names = [names[i] for i in first]
        n = len(device_ids)

        # Which intervals each point covers: [k_from, k_to).
        vfrom_a = np.array(vfrom, dtype=float)
        vto_a = np.array(vto, dtype=float)
        k_from = np.clip(np.floor((vfrom_a - grid.start) / grid.step), 0, T).astype(np.int64)
        k_to = np.clip(np.ceil((vto_a - grid.start) / grid.step), 0, T).astype(np.int64)
        k = np.arange(T)
        cover = (k[None, :] >= k_from[:, None]) & (k[None, :] < k_to[:, None])  # (P, T)
        p_idx, t_idx = np.nonzero(cover)
        # Points are ordered by (device, valid_from): for a device's interval covered by two
        # points, the earlier one (in force at the start) comes first and wins.
        key = point_dev[p_idx] * T + t_idx
        _, winner = np.unique(key, return_index=True)
        p_win, t_win, d_win = p_idx[winner], t_idx[winner], point_dev[p_idx[winner]]

        role_p = np.array([ROLES.index(r) for r in role], dtype=np.int8)
        area_p = _index_of(np.array(area_id, dtype=np.int64), area_ids)
        feeder_p = _index_of(np.array(feeder_id, dtype=np.int64), feeder_ids)
        role_a = np.full((n, T), NONE, dtype=np.int8)
        area_a = np.full((n, T), NONE, dtype=np.int32)
        feeder_a = np.full((n, T), NONE, dtype=np.int32)
        mult_a = np.full((n, T), np.nan)
        role_a[d_win, t_win] = role_p[p_win]
        area_a[d_win, t_win] = area_p[p_win]
        feeder_a[d_win, t_win] = feeder_p[p_win]
        mult_a[d_win, t_win] = np.array(mult, dtype=float)[p_win]
        commissioned = np.array(comm, dtype=float)
        first_k = np.ceil((commissioned - grid.start) / grid.step)  # per point; same per device
        expected = role_a != NONE
        if n:
            dev_first_k = np.full(n, -np.inf)
            dev_first_k[point_dev] = first_k
            expected &= k[None, :] >= dev_first_k[:, None]
        return Topology(
            grid=grid,
            device_ids=device_ids,
            device_names=device_names,
            role=role_a,
            area=area_a,
            feeder=feeder_a,
            multiplier=mult_a,
            expected=expected,
            area_names=[a[1] for a in areas],
            area_feeder=_index_of(np.array([a[2] for a in areas], dtype=np.int64), feeder_ids),
            area_public=np.array([bool(a[3]) for a in areas], dtype=bool),
            area_kv=np.array([a[4] for a in areas], dtype=float),
            feeder_names=[f[1] for f in feeders],
            feeder_kv=np.array([f[2] for f in feeders], dtype=float),
            replacements=self._replacements(grid, device_ids),
        )

    def _replacements(self, grid: Grid, device_ids: np.ndarray) -> list[Replacement]:
        rows = self.conn.execute(
            "SELECT old_device_id, new_device_id, extract(epoch FROM at)::float8,"
            " old_final, new_first FROM meter_replacements"
            " WHERE quantity = %s AND at >= to_timestamp(%s) AND at < to_timestamp(%s)"
            " ORDER BY at",
            (ENERGY, grid.start, grid.end),
        ).fetchall()
        out = []
        for old, new, at, old_final, new_first in rows:
            i, j = _row(device_ids, old), _row(device_ids, new)
            out.append(Replacement(i, j, round(at), float(old_final), float(new_first)))
        return out

    # --- registers ----------------------------------------------------------------------

    def readings(
        self, device_ids: np.ndarray, lo: int, hi: int, quantity: str = ENERGY
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Long form (row index into `device_ids`, unix seconds, value) of the readings of
        `quantity` in [lo, hi], by binary COPY."""
        query = (
            "COPY (SELECT (m.idx - 1)::int4, floor(extract(epoch FROM r.ts))::int8, r.value"
            " FROM readings r"
            " JOIN unnest({ids}::int4[]) WITH ORDINALITY AS m(device_id, idx)"
            "   ON r.device_id = m.device_id"
            " WHERE r.quantity = {q} AND r.ts >= to_timestamp({lo}) AND r.ts <= to_timestamp({hi})"
            "   AND r.quality & {bad} = 0"
            ") TO STDOUT (FORMAT BINARY)"
        )
        stmt = psycopg.sql.SQL(query).format(
            ids=psycopg.sql.Literal([int(d) for d in device_ids]),
            q=psycopg.sql.Literal(quantity),
            lo=psycopg.sql.Literal(lo),
            hi=psycopg.sql.Literal(hi),
            bad=psycopg.sql.Literal(EXCLUDED_QUALITY),
        )
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            data = b"".join(bytes(block) for block in copy)
        idx, ts, value = pgbinary.decode(data, ["int4", "int8", "float8"])
        return idx, ts, value

    def registers(self, topo: Topology, tolerance: int) -> np.ndarray:
        """The energy registers (n, T+1) of the topology's devices at the grid's boundaries
        (secondary kWh, NaN where unknown), pinned around the window's replacements."""
        grid = topo.grid
        n = len(topo.device_ids)
        idx, ts, value = self.readings(
            topo.device_ids, grid.start - tolerance, grid.end + tolerance
        )
        regs = align_registers(idx, ts, value, n, grid.start, grid.step, grid.n + 1, tolerance)
        # A day's frozen register (日冻结, stored at the local midnight that ends the day) is the
        # same register at that boundary: it fills the curve's point when that is missing (a
        # concentrator's curve for the midnight comes only with the next day's upload).
        fidx, fts, fvalue = self.readings(topo.device_ids, grid.start, grid.end, FROZEN_ENERGY)
        if fidx.size:
            frozen = align_registers(fidx, fts, fvalue, n, grid.start, grid.step, grid.n + 1, 0)
            regs = np.where(np.isnan(regs), frozen, regs)
        pairs = [r for r in topo.replacements if r.old != NONE and r.new != NONE]
        if pairs:
            regs = pin_replacements(
                regs,
                grid.boundaries,
                [r.old for r in pairs],
                [r.new for r in pairs],
                [r.at for r in pairs],
                [r.old_final for r in pairs],
                [r.new_first for r in pairs],
            )
        return regs

    def first_reading_any(self) -> datetime | None:
        """The earliest energy register of any device ever placed in the grid."""
        row = self.conn.execute(
            "SELECT min(ts) FROM readings WHERE quantity = %s"
            " AND device_id IN (SELECT device_id FROM metering_points)",
            (ENERGY,),
        ).fetchone()
        return row[0] if row else None

    def accuracy_classes(self, device_ids: np.ndarray) -> list[str | None]:
        """Each device's accuracy class from the asset ledger (meter_assets), None: unknown."""
        rows = self.conn.execute(
            "SELECT ma.accuracy_class FROM unnest(%s::int4[]) WITH ORDINALITY AS d(id, k)"
            " LEFT JOIN meter_assets ma ON ma.device_id = d.id ORDER BY d.k",
            ([int(d) for d in device_ids],),
        ).fetchall()
        return [r[0] for r in rows]

    def phases(self, device_ids: np.ndarray) -> list[str]:
        """Each device's phase (A, B, C, ABC) in its latest metering point."""
        rows = self.conn.execute(
            "SELECT (SELECT mp.phase FROM metering_points mp WHERE mp.device_id = d.id"
            "        ORDER BY mp.valid_from DESC LIMIT 1)"
            " FROM unnest(%s::int4[]) WITH ORDINALITY AS d(id, k) ORDER BY d.k",
            ([int(d) for d in device_ids],),
        ).fetchall()
        return [r[0] for r in rows]

    # --- results ---------------------------------------------------------------------

    def write_lineloss(
        self, *, level: str, period: str, names: list[str], starts: np.ndarray, result: Any
    ) -> int:
        """Upsert one level's results: `result` (a `LossResult`) holds arrays (G, P) for the
        groups `names` and the periods starting at `starts` (unix seconds). NaN is stored as
        NULL. Returns the rows written. COPY into a temp table, then one INSERT … ON CONFLICT,
        in the caller's transaction."""
        G, P = result.supply.shape
        if G == 0 or P == 0:
            return 0
        g, p = np.divmod(np.arange(G * P), P)
        columns = [(g.astype(np.int32), "int4"), (starts.astype(np.int64)[p], "int8")]
        for name in ("supply", "sales", "loss", "rate"):
            columns.append((getattr(result, name).ravel(), "float8"))
        columns.append((np.nan_to_num(result.coverage.ravel(), nan=0.0), "float8"))
        columns.append((result.status.ravel().astype(np.int16), "int2"))
        for name in COUNTS:
            columns.append((getattr(result, name).ravel().astype(np.int32), "int4"))
        data = pgbinary.encode(columns)
        with self.conn.transaction():
            self.conn.execute(_LINELOSS_IN)
            with self.conn.cursor() as cur:
                with cur.copy("COPY lineloss_in FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(data)
                cur.execute(
                    "INSERT INTO lineloss AS l (level, name, period, start, supply, sales, loss,"
                    " rate, coverage, status, present, expected, supply_present, supply_expected)"
                    " SELECT %(level)s, n.name, %(period)s, to_timestamp(i.start),"
                    "  NULLIF(i.supply, 'NaN'), NULLIF(i.sales, 'NaN'), NULLIF(i.loss, 'NaN'),"
                    "  NULLIF(i.rate, 'NaN'), i.coverage, (%(statuses)s::text[])[i.status + 1],"
                    "  i.present, i.expected, i.supply_present, i.supply_expected"
                    " FROM lineloss_in i"
                    " JOIN unnest(%(names)s::text[]) WITH ORDINALITY AS n(name, idx)"
                    "   ON n.idx = i.name_idx + 1"
                    " ON CONFLICT (level, name, period, start) DO UPDATE SET"
                    "  supply = EXCLUDED.supply, sales = EXCLUDED.sales, loss = EXCLUDED.loss,"
                    "  rate = EXCLUDED.rate, coverage = EXCLUDED.coverage,"
                    "  status = EXCLUDED.status, present = EXCLUDED.present,"
                    "  expected = EXCLUDED.expected, supply_present = EXCLUDED.supply_present,"
                    "  supply_expected = EXCLUDED.supply_expected, computed_at = now()",
                    {
                        "level": level,
                        "period": period,
                        "statuses": list(STATUS_NAMES),
                        "names": names,
                    },
                )
                written = cur.rowcount
                cur.execute("TRUNCATE lineloss_in")
        return written

    def stored_sums(
        self, *, level: str, period: str, names: list[str], starts: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The stored sums and counts (G, P) of `names` × `starts` (a month's earlier days):
        supply (NaN where NULL or not stored), sales and the counts (0 where not stored)."""
        G, P = len(names), len(starts)
        out = {"supply": np.full((G, P), np.nan), "sales": np.zeros((G, P))}
        out |= {name: np.zeros((G, P), dtype=np.int64) for name in COUNTS}
        if G == 0 or P == 0:
            return out
        stmt = psycopg.sql.SQL(
            "COPY (SELECT (n.idx - 1)::int4, (s.idx - 1)::int4,"
            " COALESCE(l.supply, 'NaN')::float8, COALESCE(l.sales, 0)::float8,"
            " l.present, l.expected, l.supply_present, l.supply_expected"
            " FROM lineloss l"
            " JOIN unnest({names}::text[]) WITH ORDINALITY AS n(name, idx) ON n.name = l.name"
            " JOIN unnest({starts}::int8[]) WITH ORDINALITY AS s(t, idx)"
            "   ON l.start = to_timestamp(s.t)"
            " WHERE l.level = {level} AND l.period = {period}) TO STDOUT (FORMAT BINARY)"
        ).format(
            names=psycopg.sql.Literal(names),
            starts=psycopg.sql.Literal([int(t) for t in starts]),
            level=psycopg.sql.Literal(level),
            period=psycopg.sql.Literal(period),
        )
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            data = b"".join(bytes(block) for block in copy)
        types = ["int4", "int4", "float8", "float8", "int4", "int4", "int4", "int4"]
        g, p, supply, sales, *counts = pgbinary.decode(data, types)
        out["supply"][g, p] = supply
        out["sales"][g, p] = sales
        for name, values in zip(COUNTS, counts, strict=True):
            out[name][g, p] = values
        return out


def _index_of(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Positions of `ids` in the sorted `table`; NONE where absent (0 = no reference)."""
    if len(table) == 0:
        return np.full(len(ids), NONE, dtype=np.int32)
    pos = np.clip(np.searchsorted(table, ids), 0, len(table) - 1)
    return np.where(table[pos] == ids, pos, NONE).astype(np.int32)


def _row(device_ids: np.ndarray, device_id: int) -> int:
    pos = int(np.searchsorted(device_ids, device_id))
    if pos < len(device_ids) and device_ids[pos] == device_id:
        return pos
    return NONE
