"""Supply reliability (供电可靠性), pure numpy: interruption records → each customer's
interruptions → interruptions per area → indices per group and period.

Records come from three sources: a meter's own power-down record (one customer), a voltage
monitor's loss of voltage or a concentrator's outage report (every customer of its area or
feeder: `expand`). Per customer the records are merged into intervals (`merge_customer`):
records of one customer that overlap or lie within `tolerance` seconds (devices' clocks
differ) are one interruption. A record without its end (the power-up was never recorded) is
*open*: it is closed only by a record with a known end that overlaps it (± `tolerance`: the
area's monitor saw the voltage return); otherwise its duration is unknown, and it is counted
apart (`open`), never guessed.

Indices (IEEE 1366, DL/T 836), per group g and period p, N_g customers served, each
interruption in the period holding its *start*:
  SAIFI = Σ sustained customer interruptions / N          (sustained: duration ≥ threshold)
  SAIDI = Σ sustained customer minutes / N                (minutes)
  CAIDI = SAIDI / SAIFI                                   (NaN when SAIFI = 0)
  ASAI  = 1 − Σ sustained customer hours / (N × period hours)
  MAIFI = Σ momentary customer interruptions / N
  RS-1  = ASAI × 100 %;  RS-3 = the same without the kinds RS-3 excludes (planned, limited)
A group of several areas (feeder, system) sums its customers' interruptions and divides by
its own N: customer-weighted, never a sum of the areas' indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

SHIFT = np.int64(1) << 34  # > any unix second we store: customer · SHIFT + t stays ordered


class Kind(IntEnum):
    UNPLANNED = 0
    PLANNED = 1  # 计划停电
    LIMITED = 2  # 系统电源不足限电 (limited supply)


@dataclass
class Blocks:
    """Each customer's interruptions (one row each), sorted by customer then start."""

    customer: np.ndarray  # (m,) int
    start: np.ndarray  # (m,) int64 unix seconds
    end: np.ndarray  # (m,) float64 unix seconds; NaN: open (end unknown)
    kind: np.ndarray  # (m,) int8 Kind

    @property
    def open(self) -> np.ndarray:
        return np.isnan(self.end)

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start  # seconds, NaN where open


def expand(
    owner: np.ndarray, start: np.ndarray, end: np.ndarray, indptr: np.ndarray, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group-level records (owner = area or feeder index) → one record per member customer;
    `indptr`/`members`: the group's customers in CSR form (members[indptr[g]:indptr[g+1]])."""
    owner = np.asarray(owner, dtype=np.int64)
    counts = indptr[owner + 1] - indptr[owner]
    rec = np.repeat(np.arange(owner.size), counts)
    offset = np.arange(rec.size) - np.repeat(np.cumsum(counts) - counts, counts)
    cust = members[indptr[owner][rec] + offset]
    return cust, np.asarray(start, dtype=np.int64)[rec], np.asarray(end, dtype=float)[rec]


def csr(group_of: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Customers per group (CSR); group_of −1: in none."""
    group_of = np.asarray(group_of, dtype=np.int64)
    ok = np.flatnonzero(group_of >= 0)
    order = ok[np.argsort(group_of[ok], kind="stable")]
    indptr = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(group_of[ok], minlength=n_groups), out=indptr[1:])
    return indptr, order


def merge_customer(
    customer: np.ndarray, start: np.ndarray, end: np.ndarray, *, tolerance: int
) -> Blocks:
    """Per customer, overlapping records (or ones `tolerance` s apart) → one interruption.

    An open record (end NaN) stands for [start, start] and is closed when a record with a
    known end covers it in the same block (its start before that end, or at most `tolerance`
    after it: clocks differ); otherwise the block stays open. The kind is set later
    (`classify`)."""
    customer = np.asarray(customer, dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=float)
    if np.any(end < start):
        bad = int(np.flatnonzero(end < start)[0])
        raise ValueError(f"record {bad}: ends before it starts ({end[bad]:.0f} < {start[bad]})")
    is_open = np.isnan(end)
    eff_end = np.where(is_open, start, end).astype(np.int64)
    key_s = customer * SHIFT + start
    order = np.argsort(key_s, kind="stable")
    c, s, e, op, key_s = customer[order], start[order], eff_end[order], is_open[order], key_s[order]
    key_e = c * SHIFT + e
    reach = np.maximum.accumulate(key_e)  # running max end (customer-separated by SHIFT)
    new = np.ones(s.size, dtype=bool)
    new[1:] = key_s[1:] > reach[:-1] + tolerance
    first = np.flatnonzero(new)
    nb = first.size
    if nb == 0:
        return Blocks(c, s, np.zeros(0), np.zeros(0, dtype=np.int8))
    known_end = np.maximum.reduceat(np.where(op, -1, e), first)  # rows sorted by block
    open_start = np.maximum.reduceat(np.where(op, s, -1), first)
    # an open start up to `tolerance` after the known end is that end, seen by another clock
    still_open = (open_start >= 0) & ((known_end < 0) | (open_start > known_end + tolerance))
    b_end = np.where(still_open, np.nan, known_end.astype(float))
    return Blocks(c[first], s[first], b_end, np.zeros(nb, dtype=np.int8))


def classify(
    blocks_group: np.ndarray,
    start: np.ndarray,
    notice_group: np.ndarray,
    notice_start: np.ndarray,
    notice_end: np.ndarray,
    notice_kind: np.ndarray,
    *,
    tolerance: int,
) -> np.ndarray:
    """Kind of each interruption: that of the notice (planned / limited supply) of its group
    in force at its start (notice start − tolerance ≤ start ≤ notice end), else UNPLANNED.
    Of overlapping notices of one group the latest-starting one counts."""
    kind = np.zeros(np.asarray(start).size, dtype=np.int8)
    if not np.asarray(notice_start).size or not kind.size:
        return kind
    ng = np.asarray(notice_group, dtype=np.int64)
    ns = np.asarray(notice_start, dtype=np.int64) - tolerance
    order = np.lexsort((ns, ng))
    keys = ng[order] * SHIFT + ns[order]
    q = np.asarray(blocks_group, dtype=np.int64) * SHIFT + np.asarray(start, dtype=np.int64)
    i = np.searchsorted(keys, q, side="right") - 1
    hit = i >= 0
    j = order[np.clip(i, 0, None)]
    hit &= (ng[j] == np.asarray(blocks_group)) & (np.asarray(start) <= np.asarray(notice_end)[j])
    kind[hit] = np.asarray(notice_kind, dtype=np.int8)[j[hit]]
    return kind


@dataclass
class Interruptions:
    """Interruptions per area: customers' interruptions of one area that overlap in time."""

    area: np.ndarray  # (k,) int
    start: np.ndarray  # (k,) int64
    end: np.ndarray  # (k,) float64, NaN where any customer's end is unknown
    customers: np.ndarray  # (k,) customer interruptions in it
    open: np.ndarray  # (k,) those with an unknown end
    customer_minutes: np.ndarray  # (k,) of the known ends
    kind: np.ndarray  # (k,) int8: the highest Kind of its customers' interruptions
    momentary: np.ndarray  # (k,) bool: known end and shorter than the threshold
    of_block: np.ndarray  # (m,) the interruption index of each customer interruption


def area_interruptions(
    blocks: Blocks, area_of: np.ndarray, *, tolerance: int, threshold: int
) -> Interruptions:
    """Merge the customers' interruptions of each area that overlap (± tolerance)."""
    a = np.asarray(area_of, dtype=np.int64)[blocks.customer]
    keep = a >= 0
    if not keep.all():
        raise ValueError(f"{int((~keep).sum())} interruption(s) of customers in no area")
    e = np.where(blocks.open, blocks.start, blocks.end).astype(np.int64)
    key_s = a * SHIFT + blocks.start
    order = np.argsort(key_s, kind="stable")
    key_s = key_s[order]
    reach = np.maximum.accumulate(a[order] * SHIFT + e[order])
    new = np.ones(order.size, dtype=bool)
    new[1:] = key_s[1:] > reach[:-1] + tolerance
    idx = np.cumsum(new) - 1
    k = int(new.sum())
    of_block = np.empty(order.size, dtype=np.int64)
    of_block[order] = idx
    first = order[new]
    op = blocks.open
    dur = np.nan_to_num(blocks.duration)
    if k == 0:
        end = np.zeros(0)
        kind = np.zeros(0, dtype=np.int8)
    else:  # in `order` the rows of an interruption are contiguous: reduceat at their firsts
        at = np.flatnonzero(new)
        end = np.maximum.reduceat(np.where(op, -np.inf, blocks.end)[order], at)
        kind = np.maximum.reduceat(np.asarray(blocks.kind, dtype=np.int8)[order], at)
    n_open = np.bincount(of_block, weights=op, minlength=k).astype(np.int64)
    end = np.where((n_open > 0) | np.isinf(end), np.nan, end)
    return Interruptions(
        area=a[first],
        start=blocks.start[first],
        end=end,
        customers=np.bincount(of_block, minlength=k).astype(np.int64),
        open=n_open,
        customer_minutes=np.bincount(of_block, weights=dur / 60.0, minlength=k),
        kind=kind,
        momentary=~np.isnan(end) & (end - blocks.start[first] < threshold),
        of_block=of_block,
    )


@dataclass
class Indices:
    """Per group (G) and period (P): the sums and the indices."""

    customers: np.ndarray  # (G,) N served
    hours: np.ndarray  # (P,) period length
    sustained: np.ndarray  # (G, P) customer interruptions ≥ threshold
    customer_minutes: np.ndarray  # (G, P) of the sustained ones
    momentary: np.ndarray  # (G, P)
    open: np.ndarray  # (G, P) customer interruptions of unknown duration (not in the above)
    minutes_rs3: np.ndarray  # (G, P) customer minutes without RS-3's excluded kinds
    saifi: np.ndarray
    saidi: np.ndarray  # minutes
    caidi: np.ndarray  # minutes
    asai: np.ndarray  # fraction
    maifi: np.ndarray
    rs1: np.ndarray  # percent
    rs3: np.ndarray  # percent


def indices(
    blocks: Blocks,
    group_of: np.ndarray,
    n_groups: int,
    bounds: np.ndarray,
    *,
    threshold: int,
    rs3_excludes: tuple[int, ...] = (Kind.PLANNED, Kind.LIMITED),
) -> Indices:
    """Indices per group of customers (`group_of` (n,) int, −1: in none) and period
    (`bounds` (P+1,) unix seconds, increasing); interruptions starting outside are ignored."""
    group_of = np.asarray(group_of, dtype=np.int64)
    bounds = np.asarray(bounds, dtype=np.int64)
    P = bounds.size - 1
    N = np.bincount(group_of[group_of >= 0], minlength=n_groups).astype(float)
    hours = np.diff(bounds) / 3600.0
    g = group_of[blocks.customer]
    p = np.searchsorted(bounds, blocks.start, side="right") - 1
    ok = (g >= 0) & (p >= 0) & (p < P)
    cell = g[ok] * P + p[ok]
    dur = blocks.duration[ok]
    op = np.isnan(dur)
    sus = ~op & (dur >= threshold)
    mom = ~op & (dur < threshold)
    rs3 = sus & ~np.isin(blocks.kind[ok], np.asarray(rs3_excludes, dtype=np.int8))
    size = n_groups * P

    def total(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = mask.astype(float) if weights is None else np.where(mask, weights, 0.0)
        return np.bincount(cell, weights=w, minlength=size).reshape(n_groups, P)

    sustained = total(sus)
    minutes = total(sus, np.nan_to_num(dur) / 60.0)
    minutes3 = total(rs3, np.nan_to_num(dur) / 60.0)
    momentary = total(mom)
    n_open = total(op)
    with np.errstate(invalid="ignore", divide="ignore"):
        Ncol = np.where(N > 0, N, np.nan)[:, None]
        saifi = sustained / Ncol
        saidi = minutes / Ncol
        caidi = np.where(sustained > 0, minutes / sustained, np.nan)
        demand = Ncol * hours[None, :] * 60.0  # customer minutes demanded
        asai = 1.0 - minutes / demand
        rs3_rate = (1.0 - minutes3 / demand) * 100.0
    return Indices(
        customers=N,
        hours=hours,
        sustained=sustained.astype(np.int64),
        customer_minutes=minutes,
        momentary=momentary.astype(np.int64),
        open=n_open.astype(np.int64),
        minutes_rs3=minutes3,
        saifi=saifi,
        saidi=saidi,
        caidi=caidi,
        asai=asai,
        maifi=momentary / Ncol,
        rs1=asai * 100.0,
        rs3=rs3_rate,
    )
