"""The demo's grid: a simulated feeder (`simulators.world`) served live, with its topology.

    f01 feeder head ─┐ (10 kV side: a DL/T 645 bus on a pty, PT 100;
    f01-d01 专变    ─┘  yesterday's curve read at start, 补抄 of the day before)
    f01-a01 … a0N   public areas: each a concentrator uploading its area total and its
                    customers over MQTT (the last two local days at start, then today's
                    points every 15 minutes)
Faults, so the line-loss results and the worklist have something to show, both from two
days after the world's start: a customer of f01-a02 steals (its meter sees part of its load:
the area's loss is high; its own energy drops), and the ledger changes f01-a03's total meter
to half its real CT ratio (the area's loss looks negative; its feeder's rises).
Outages, for reliability: yesterday f01-a01 is out for 40 minutes (unplanned), and f01-a03
for a planned maintenance inside an outage notice; each area's concentrator reports its
outage in its status (`outages`), the notice is entered as an operator would.
The world spans from four days before today to tomorrow, local time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from simulators.concentrator import SimConcentrator
from simulators.dlt645_bus import DLT645BusSimulator, SimMeter
from simulators.world import Fault, World, WorldSpec, build_world
from simulators.world.adapters import bus_address

THEFT_SHARE = 0.3  # of the thief's load that bypasses its meter
PAST_DAYS = 4  # local days uploaded at start (the abnormal-reading rules want days on both
# sides of the theft's start)
FAULTS_FROM_DAY = 2  # of the world: two clean days, then the theft and the ledger's change
BUS_REREAD_DAYS = 3  # the 10 kV bus's 补抄 window (counting today): a slow line's start-up
# yesterday's outages, local (hour, minute) from / to; the planned one inside its notice
UNPLANNED = ("f01-a01", (10, 0), (10, 40))
PLANNED = ("f01-a03", (14, 10), (15, 50))
NOTICE = ((14, 0), (17, 0), "transformer maintenance")
HEAD_NOMINAL_V = 57.7  # the feeder head meter sits behind 10 kV / 100 V PTs
UPLOAD_ACK_S = 30.0  # the broker acknowledges each message by then


@dataclass
class GridOptions:
    areas: int = 3
    meters_per_area: int = 12
    seed: int = 9
    instant_interval: float = 15.0  # the 10 kV bus's instantaneous reads


def demo_world(options: GridOptions, now: datetime, tz: ZoneInfo) -> World:
    """The world from the day before yesterday (local) to tomorrow, with its two faults."""
    today = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    spec = WorldSpec(
        seed=options.seed,
        start=(today - timedelta(days=PAST_DAYS)).astimezone(UTC),
        days=PAST_DAYS + 2,
        feeders=1,
        areas_per_feeder=options.areas,
        meters_per_area=options.meters_per_area,
    )
    plain = build_world(spec)
    faults = []
    since = (today - timedelta(days=PAST_DAYS - FAULTS_FROM_DAY)).astimezone(UTC)
    if options.areas >= 2:  # the largest customer of f01-a02 steals
        g = plain.grid
        members = np.flatnonzero(
            (g.meter_area == g.areas.index("f01-a02")) & (g.role == "customer")
        )
        thief = members[np.argmax(plain.truth.energy[members].sum(axis=1))]
        faults.append(Fault("theft", g.meters[thief], since, {"share": THEFT_SHARE}))
    if options.areas >= 3:  # the ledger's CT ratio of f01-a03's total becomes half the real one
        ct = int(plain.grid.ct[plain.grid.index("f01-a03-total")])
        faults.append(Fault("wrong_multiplier", "f01-a03-total", since, {"ct_ratio": ct / 2}))
    return build_world(replace(spec, faults=tuple(faults)))


class DemoGrid:
    """Serves the world's meters: its concentrators over the demo's Mosquitto, its 10 kV
    meters on a DL/T 645 bus; describes them (and the grid) as inventory tables."""

    def __init__(
        self,
        world: World,
        *,
        mqtt_port: int,
        options: GridOptions,
        tz: ZoneInfo,
        mqtt_accounts: Callable[[dict[str, list[str]]], dict[str, Any]] | None = None,
    ) -> None:
        self.world = world
        self.options = options
        self.tz = tz
        inv = world.inventory(area_totals="local")
        self._tables = inv
        # each concentrator logs in with its own broker account (name → its meters' topics)
        auth = (
            mqtt_accounts({c["name"]: list(c["meters"]) for c in inv["concentrator"]})
            if mqtt_accounts
            else {}
        )
        self.concentrators = [
            SimConcentrator(c["name"], {m: world.meter_model(m) for m in c["meters"]},
                            port=mqtt_port,
                            username=getattr(auth.get(c["name"]), "username", None),
                            password=getattr(auth.get(c["name"]), "password", None))
            for c in inv["concentrator"]
        ]  # fmt: skip
        self.mv_meters = [d["name"] for d in inv["device"]]  # what the world put on Modbus
        self.bus = DLT645BusSimulator(
            [SimMeter(bus_address(world, m), world.meter_model(m)) for m in self.mv_meters],
            baud=9600,
        )

    async def start(self) -> None:
        await self.bus.start()
        for c in self.concentrators:
            await asyncio.to_thread(c.start)

    async def stop(self) -> None:
        for c in self.concentrators:
            await asyncio.to_thread(c.stop)
        await self.bus.stop()

    def tables(self) -> dict[str, Any]:
        """The config tables: topology, concentrators, and the 10 kV meters on the bus."""
        heads = set(self.world.grid.meters[i] for i in
                    np.flatnonzero(self.world.grid.role == "feeder_head"))  # fmt: skip
        bus = {
            "name": "f01-10kv-485",
            "port": self.bus.port,
            "baud": 9600,
            "instant_interval": self.options.instant_interval,
            "reread_days": BUS_REREAD_DAYS,
            "meter": [
                {"name": m, "address": bus_address(self.world, m)}
                | ({"nominal_voltage": HEAD_NOMINAL_V} if m in heads else {})
                for m in self.mv_meters
            ],
        }
        return {**self._tables, "device": [], "bus": [bus]}

    def outages(self, today: datetime) -> list[tuple[str, datetime, datetime]]:
        """Yesterday's outages (area, start, end); their concentrators report them."""
        yesterday = today - timedelta(days=1)

        def at(hm: tuple[int, int]) -> datetime:
            return yesterday.replace(hour=hm[0], minute=hm[1])

        return [(a, at(t0), at(t1)) for a, t0, t1 in (UNPLANNED, PLANNED) if a in self.areas()]

    def notices(self, today: datetime) -> list[dict[str, Any]]:
        """The planned outage's notice (for analytics.reliability_store.add_notice)."""
        if PLANNED[0] not in self.areas():
            return []
        yesterday = today - timedelta(days=1)
        (h0, m0), (h1, m1), reason = NOTICE
        return [
            {
                "scope": "area",
                "name": PLANNED[0],
                "kind": "planned",
                "start": yesterday.replace(hour=h0, minute=m0),
                "end": yesterday.replace(hour=h1, minute=m1),
                "reason": reason,
            }
        ]

    def areas(self) -> set[str]:
        return set(self.world.grid.areas)

    def upload_past_days(self, stopping: threading.Event) -> int:
        """Each concentrator uploads the past local days (as it would have, each morning);
        blocking (a thread); stops between messages' batches once `stopping` is set."""
        start = datetime.fromtimestamp(int(self.world.truth.boundaries[0]), UTC)
        today = self.today()
        for c in self.concentrators:
            c.outages = [(t0, t1) for a, t0, t1 in self.outages(today) if c.name == f"{a}-jzq"]
        sent = 0
        for d in range(PAST_DAYS):
            for c in self.concentrators:
                if stopping.is_set():
                    return sent
                sent += c.upload_day(start + timedelta(days=d))
        return sent

    def upload_today(self, stopping: threading.Event, now: float) -> int:
        """Today's 15-min points up to `now`, as concentrators that upload through the day do
        (yesterday's last interval ends at today's first point); blocking; returns the
        messages sent. Points already stored are skipped by the writer."""
        today = (
            datetime.fromtimestamp(now, UTC)
            .astimezone(self.tz)
            .replace(hour=0, minute=0, second=0, microsecond=0)
        )
        sent = 0
        for c in self.concentrators:
            if stopping.is_set():
                break
            infos = []
            for m in c.meters:
                payload = c.day_payload(m, today)
                payload["readings"] = [
                    r for r in payload["readings"]
                    if r[0] != "1.8.0*d" and datetime.fromisoformat(r[1]).timestamp() <= now
                ]  # fmt: skip
                infos.append(
                    c.client.publish(f"gridread/v1/{m}/readings", json.dumps(payload), qos=1)
                )
            for info in infos:
                info.wait_for_publish(UPLOAD_ACK_S)
            sent += len(infos)
        return sent

    def description(self) -> str:
        g = self.world.grid
        public = int((~g.area_dedicated).sum())
        return (
            f"a feeder f01 with its topology: {public} areas of {self.options.meters_per_area}"
            f" customers (concentrators, MQTT), a 专变 and the head meter on {self.bus.port}"
            f" (DL/T 645); {self.fault_text()}"
        )

    def today(self) -> datetime:
        """The local midnight starting today (the world's start + PAST_DAYS)."""
        start = datetime.fromtimestamp(int(self.world.truth.boundaries[0]), UTC)
        return start.astimezone(self.tz) + timedelta(days=PAST_DAYS)

    def tips(self, base: str) -> list[str]:
        """Where the line loss shows (the ranking and contributions: yesterday by default),
        and issue 10's parts: power quality, reliability, the worklist, billing."""
        today = self.today().date()
        first = today - timedelta(days=PAST_DAYS)
        return [
            f"curl {base}/lineloss/ranking   (yesterday's areas by loss rate)",
            f"curl '{base}/lineloss?level=feeder&period=day'",
            f"curl {base}/lineloss/areas/f01-a02/contributions",
            f"curl '{base}/power-quality/voltage?kind=area'   (voltage qualification per day)",
            f"curl '{base}/reliability/indices?level=area'   (SAIFI, SAIDI … per area, month)",
            f"curl {base}/worklist   (suspected theft, wrong CT ratio … per area)",
            f"curl '{base}/billing/export?start={first}&end={today}'   (VEE-validated reads)",
        ]

    def fault_text(self) -> str:
        out = []
        since = self.today().date() - timedelta(days=PAST_DAYS - FAULTS_FROM_DAY)
        for f in self.world.truth.faults:
            name = self.world.grid.meters[f.meter]
            if f.kind == "theft":
                out.append(f"theft at {name} ({f.params['share']:.0%} of its load) from {since}")
            else:
                out.append(
                    f"{name}'s CT ratio in the ledger is {f.params['ct_ratio']:g} from {since}"
                )
        for a, t0, t1 in self.outages(self.today()):
            kind = "planned, with a notice" if a == PLANNED[0] else "unplanned"
            out.append(f"{a} out yesterday {t0:%H:%M}–{t1:%H:%M} ({kind})")
        return "; ".join(out) or "none"
