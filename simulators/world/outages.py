"""Supply interruptions of a world, with ground truth, and the records devices would make.

`simulate_outages(world, OutageSpec)` draws outages of whole feeders, areas and single
customers (unplanned sustained and momentary, planned with a notice, limited supply with a
notice), never two at once for one customer (so each is one interruption of each customer it
hits). The records (`Record`: device, event kind, start, end) are what gridread stores as
events:

* every customer's meter records its own power-down (`power_down`), with its own clock
  offset (± `clock_jitter_s`); a share of those in area or feeder outages lose the power-up
  (end None), which the area's record then closes;
* a public area's concentrator reports the area out (`outage`); a dedicated area's meter is
  its customer's; the feeder head meter records the feeder's power-down (`power_down`).

`OutageTruth.indices(...)` computes the indices straight from the outages (a plain loop over
them, independent of analytics/reliability.py) for the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from simulators.world.world import World

YEAR = 365 * 86400


@dataclass(frozen=True)
class OutageSpec:
    seed: int = 1
    # expected events per year of each kind (of the world's span, scaled)
    feeder_unplanned: float = 4.0  # per feeder
    area_unplanned: float = 3.0  # per area
    customer_unplanned: float = 0.5  # per customer
    momentary_share: float = 0.4  # of the unplanned ones
    feeder_planned: float = 2.0  # per feeder
    area_planned: float = 1.0  # per area
    area_limited: float = 0.5  # per area (限电)
    missing_power_up: float = 0.05  # of meters in an area / feeder outage
    clock_jitter_s: int = 10  # each meter's record time is off by up to this
    days: int | None = None  # None: the world's span


@dataclass(frozen=True)
class Outage:
    scope: str  # feeder | area | customer
    name: str  # feeder, area or customer meter name
    start: int  # unix seconds
    end: int
    kind: str  # unplanned | planned | limited


@dataclass(frozen=True)
class Record:
    device: str
    kind: str  # event kind
    start: int
    end: int | None


@dataclass(frozen=True)
class Notice:
    scope: str  # feeder | area
    name: str
    kind: str  # planned | limited
    start: datetime
    end: datetime


@dataclass
class OutageTruth:
    customers: list[str]  # the world's customers (customer meters, dedicated area meters)
    customer_area: list[str]
    area_feeder: dict[str, str]
    outages: list[Outage]
    affected: list[list[int]]  # per outage, the customer indices it hits
    records: list[Record] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    def group(self, level: str) -> list[str]:
        if level == "area":
            return self.customer_area
        if level == "feeder":
            return [self.area_feeder[a] for a in self.customer_area]
        return ["system"] * len(self.customers)

    def indices(self, level: str, lo: int, hi: int, threshold: int) -> dict[str, dict]:
        """Per group of `level`: N, sustained, momentary, customer minutes (sustained), those
        without planned and limited, SAIFI, SAIDI, MAIFI, ASAI, RS-3 over [lo, hi)."""
        groups = self.group(level)
        out: dict[str, dict] = {}
        for g in groups:
            out.setdefault(g, dict.fromkeys(("N", "sustained", "momentary", "cmi", "cmi3"), 0))
            out[g]["N"] += 1
        for o, hit in zip(self.outages, self.affected, strict=True):
            if not lo <= o.start < hi:
                continue
            minutes = (o.end - o.start) / 60
            for c in hit:
                row = out[groups[c]]
                if o.end - o.start < threshold:
                    row["momentary"] += 1
                    continue
                row["sustained"] += 1
                row["cmi"] += minutes
                if o.kind == "unplanned":
                    row["cmi3"] += minutes
        hours = (hi - lo) / 3600
        for row in out.values():
            n = row["N"]
            row["saifi"] = row["sustained"] / n
            row["saidi"] = row["cmi"] / n
            row["maifi"] = row["momentary"] / n
            row["asai"] = 1 - row["cmi"] / (n * hours * 60)
            row["rs3"] = 100 * (1 - row["cmi3"] / (n * hours * 60))
        return out


def simulate_outages(world: World, spec: OutageSpec = OutageSpec()) -> OutageTruth:
    g = world.grid
    rng = np.random.default_rng(spec.seed)
    t0 = int(world.truth.boundaries[0])
    span = (spec.days or world.spec.days) * 86400
    scale = span / YEAR
    is_cust = (g.role == "customer") | (
        (g.role == "area_total") & g.area_dedicated[np.clip(g.meter_area, 0, None)]
    )
    cust = np.flatnonzero(is_cust)
    truth = OutageTruth(
        customers=[g.meters[i] for i in cust],
        customer_area=[g.areas[g.meter_area[i]] for i in cust],
        area_feeder={a: g.feeders[g.area_feeder[j]] for j, a in enumerate(g.areas)},
        outages=[],
        affected=[],
    )
    cust_feeder = g.meter_feeder[cust]
    cust_area = g.meter_area[cust]
    busy: dict[int, list[tuple[int, int]]] = {f: [] for f in range(len(g.feeders))}

    def draw(rate: float) -> int:
        return int(rng.poisson(rate * scale))

    def duration(kind: str) -> int:
        if kind == "momentary":
            return int(rng.integers(5, 240))
        if kind == "unplanned":
            return int(rng.integers(10 * 60, 6 * 3600))
        return int(rng.integers(2 * 3600, 8 * 3600))

    def add(scope: str, name: str, feeder: int, hit: np.ndarray, kind: str) -> None:
        length = duration(kind)
        start = t0 + int(rng.integers(0, max(span - length, 1)))
        margin = 3600  # never two outages of one feeder within an hour of each other
        if any(s - margin < start + length and start < e + margin for s, e in busy[feeder]):
            return
        busy[feeder].append((start, start + length))
        real = "unplanned" if kind == "momentary" else kind
        truth.outages.append(Outage(scope, name, start, start + length, real))
        truth.affected.append(hit.tolist())
        if real != "unplanned":  # the notice: announced a little wider than it lasted
            truth.notices.append(
                Notice(
                    scope,
                    name,
                    real,
                    datetime.fromtimestamp(start - 600, UTC),
                    datetime.fromtimestamp(start + length + 1800, UTC),
                )
            )

    def unplanned() -> str:
        return "momentary" if rng.random() < spec.momentary_share else "unplanned"

    for f, feeder in enumerate(g.feeders):
        hit = np.flatnonzero(cust_feeder == f)
        for _ in range(draw(spec.feeder_unplanned)):
            add("feeder", feeder, f, hit, unplanned())
        for _ in range(draw(spec.feeder_planned)):
            add("feeder", feeder, f, hit, "planned")
    for a, area in enumerate(g.areas):
        f = int(g.area_feeder[a])
        hit = np.flatnonzero(cust_area == a)
        for _ in range(draw(spec.area_unplanned)):
            add("area", area, f, hit, unplanned())
        for _ in range(draw(spec.area_planned)):
            add("area", area, f, hit, "planned")
        for _ in range(draw(spec.area_limited)):
            add("area", area, f, hit, "limited")
    for c in range(cust.size):
        for _ in range(draw(spec.customer_unplanned)):
            add("customer", truth.customers[c], int(cust_feeder[c]), np.array([c]), unplanned())
    truth.records = _records(world, truth, spec, rng)
    return truth


def _records(world: World, truth: OutageTruth, spec: OutageSpec, rng) -> list[Record]:
    g = world.grid
    out: list[Record] = []
    jitter = spec.clock_jitter_s
    offset = {m: int(rng.integers(-jitter, jitter + 1)) for m in g.meters}
    public = {a for j, a in enumerate(g.areas) if not g.area_dedicated[j]}
    for o, hit in zip(truth.outages, truth.affected, strict=True):
        # a lost power-up only where another device's record of the outage closes it
        group = o.scope == "feeder" or (o.scope == "area" and o.name in public)
        for c in hit:
            m = truth.customers[c]
            lost = group and rng.random() < spec.missing_power_up
            end = None if lost else o.end + offset[m]
            out.append(Record(m, "power_down", o.start + offset[m], end))
        areas = {truth.customer_area[c] for c in hit} if o.scope != "customer" else set()
        for a in sorted(areas & public):  # the concentrator's outage report (its own clock)
            out.append(Record(f"{a}-jzq", "outage", o.start, o.end))
        if o.scope == "feeder":
            head = f"{o.name}-head"
            out.append(Record(head, "power_down", o.start + offset[head], o.end + offset[head]))
    return out
