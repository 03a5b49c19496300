"""The demo: a small simulated grid wired to the real pipeline.

Modbus TCP meters (one port, units 1..N)          ┐
DL/T 645 meters on an RS-485 bus (a pty)          │
a voltage monitor on Modbus RTU (two wired ptys)  ├─► collectors ─► PostgreSQL ─► API
a concentrator uploading its area by MQTT         │     (a local Mosquitto, when installed)
  (a few meters "not read": the re-read fills them)│            │
a feeder with its topology (gridread.demo_grid):  ┘            └─► analytics: line loss,
  its areas' concentrators, its 10 kV meters on a DL/T 645 bus      power quality, reliability,
  (yesterday: an unplanned outage, a planned one with its notice)   worklist, VEE / billing
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from analytics.reliability_store import add_notice
from collectors.modbus.registermap import load_register_map
from gridread.broker import Broker, mosquitto_binary, start_broker
from gridread.demo_grid import PAST_DAYS, DemoGrid, GridOptions, demo_world
from gridread.inventory import (
    BusMeterSpec,
    BusSpec,
    ConcentratorSpec,
    DeviceSpec,
    Inventory,
    VoltageMonitorSpec,
    parse_inventory,
)
from gridread.runtime import Running
from ingest.localtime import DEFAULT_TIMEZONE
from simulators.concentrator import SimConcentrator
from simulators.dlt645_bus import DLT645BusSimulator, make_meters
from simulators.meter_model import MeterModel
from simulators.modbus_meter import Fault, ModbusMeterSimulator
from simulators.nullmodem import NullModem
from simulators.voltage_monitor import VoltageModel, VoltageMonitorSimulator

log = logging.getLogger("gridread.demo")
TZ = ZoneInfo(DEFAULT_TIMEZONE)  # the demo world runs on the default site zone
SUBSCRIBED_WITHIN_S = 30.0  # the local broker confirms the worker's subscription by then
# a stop waits this long for an upload under way: its messages are acknowledged while the
# broker still runs (a disconnected client would wait for each acknowledgement in vain)
UPLOAD_GRACE_S = 10.0
CURVE_STEP_S = 900  # the concentrators' 15-min points
STORED_WITHIN_S = 120.0  # the grid's past days are in the database by then


@dataclass
class DemoOptions:
    meters: int = 10
    sim_port: int = 5020
    interval: float = 5.0
    rs485_meters: int = 8
    concentrator_meters: int = 60
    faults: dict[int, Fault] = field(default_factory=dict)
    slow_delay: float = 6.0
    grid: GridOptions = field(default_factory=GridOptions)  # areas = 0: no grid


class DemoWorld:
    """Starts the simulators, describes them as an inventory, stops them."""

    def __init__(self, options: DemoOptions, data_dir: Path) -> None:
        self.o = options
        self.data_dir = data_dir
        rng = random.Random(645)
        self.regmap = load_register_map("three_phase_meter")
        self.modbus = ModbusMeterSimulator(
            self.regmap,
            {u: MeterModel.random(rng) for u in range(1, options.meters + 1)},
            port=options.sim_port,
            slow_delay=options.slow_delay,
        )
        self.bus = DLT645BusSimulator(make_meters(options.rs485_meters), baud=9600)
        self.line = NullModem()
        self.monitor: VoltageMonitorSimulator | None = None
        self.broker: Broker | None = None  # the shipped secure config, files in data_dir
        self.mqtt_port: int | None = None
        self.concentrator: SimConcentrator | None = None
        self.grid: DemoGrid | None = None
        self._uploading = threading.Lock()
        self._stopping = threading.Event()
        self._conc_meters = {
            f"demo-c{i:03d}": MeterModel.random(rng) for i in range(options.concentrator_meters)
        }
        self.notes: list[str] = []
        self.url = ""  # the database's, once the pipeline runs
        self._failing = min(5, len(self._conc_meters) // 10)  # meters the upload leaves out

    async def start(self) -> None:
        await self.modbus.start()
        for unit, kind in self.o.faults.items():
            self.modbus.set_fault(unit, kind)
        self.notes.append(f"Modbus TCP meters on 127.0.0.1:{self.modbus.port}")
        if self.o.rs485_meters:
            await self.bus.start()
            self.notes.append(
                f"{self.o.rs485_meters} DL/T 645 meters on {self.bus.port} (9600 8E1)"
            )
        await self.line.start()
        self.monitor = VoltageMonitorSimulator(self.line.a, VoltageModel(), unit=1)
        await self.monitor.start()
        self.notes.append(f"a voltage monitor (Modbus RTU) on {self.line.b}")
        if self.o.concentrator_meters and mosquitto_binary():
            broker = await self._start_broker()
            self.concentrator = SimConcentrator(
                "demo-jzq",
                self._conc_meters,
                port=broker.port,
                failing=set(sorted(self._conc_meters)[: self._failing]),
                **await asyncio.to_thread(broker.login, "demo-jzq", list(self._conc_meters)),
            )
            self.notes.append(
                f"a concentrator with {len(self._conc_meters)} meters via Mosquitto on"
                f" 127.0.0.1:{broker.port} ({self._failing} not read: the re-read fills them)"
            )
        elif self.o.concentrator_meters:
            self.notes.append(
                "no concentrator: mosquitto is not installed (apt-get install mosquitto)"
            )
        if self.o.grid.areas and self.mqtt_port is None and not mosquitto_binary():
            self.notes.append(
                "no grid: its concentrators need mosquitto (apt-get install mosquitto)"
            )
        elif self.o.grid.areas:
            broker = self.broker or await self._start_broker()
            world = demo_world(self.o.grid, datetime.now(TZ), TZ)
            self.grid = await asyncio.to_thread(
                lambda: DemoGrid(
                    world,
                    mqtt_port=broker.port,
                    options=self.o.grid,
                    tz=TZ,
                    mqtt_accounts=broker.concentrators,
                )
            )
            await self.grid.start()
            self.notes.append(self.grid.description())

    async def _start_broker(self) -> Broker:
        """Mosquitto with the shipped config: accounts, ACL and a local CA's TLS certificate
        generated in the data directory (passwords kept from run to run)."""
        self.mqtt_port = _free_port()
        workdir = self.data_dir / "mosquitto"
        self.broker = await asyncio.to_thread(
            start_broker, workdir, self.mqtt_port, tls_port=_free_port()
        )
        self.notes.append(
            f"Mosquitto: no anonymous clients, an account per concentrator (ACL), TLS on"
            f" 127.0.0.1:{self.broker.tls_port}; files in {workdir / 'etc'}"
        )
        return self.broker

    def inventory(self) -> Inventory:
        devices = [
            DeviceSpec(
                name=f"demo-meter-{unit:02d}",
                protocol="modbus_tcp",
                host="127.0.0.1",
                port=self.modbus.port,
                unit_id=unit,
                register_map="three_phase_meter",
                poll_interval=self.o.interval,
            )
            for unit in self.modbus.meters
        ]
        buses = []
        if self.o.rs485_meters:
            buses.append(
                BusSpec(
                    name="demo-rs485-1",
                    port=self.bus.port,
                    baud=9600,
                    instant_interval=max(self.o.interval, 15.0),
                    meter=[
                        BusMeterSpec(name=f"demo-645-{m.address[-4:]}", address=m.address)
                        for m in self.bus.meters.values()
                    ],
                )
            )
        monitors = [
            VoltageMonitorSpec(name="demo-vm", port=self.line.b, unit_id=1, poll_interval=60)
        ]
        concentrators = (
            [ConcentratorSpec(name="demo-jzq", area="demo-area", meters=sorted(self._conc_meters))]
            if self.concentrator
            else []
        )
        topology = None
        if self.grid is not None:
            grid = parse_inventory(
                self.grid.tables(), source="demo grid", base_dir=self.data_dir, timezone=TZ.key
            )
            buses += grid.buses
            concentrators += grid.concentrators
            topology = grid.topology
        return Inventory(
            devices,
            {"three_phase_meter": self.regmap},
            buses,
            monitors,
            concentrators,
            timezone=TZ.key,
            topology=topology,
        )

    def tips(self, base: str) -> list[str]:
        """The grid's lines for the banner: what it is and where to look."""
        return self.grid.tips(base) if self.grid is not None else []

    async def after_start(self, running: Running) -> None:
        """Once the pipeline runs and the ingest worker's subscription is confirmed: the
        concentrator uploads yesterday's data, the grid's concentrators the past days."""
        self.url = running.url
        if running.mqtt_worker is None:
            return
        async with asyncio.timeout(SUBSCRIBED_WITHIN_S):
            await running.mqtt_worker.subscribed.wait()
        if self.concentrator is not None:
            await asyncio.to_thread(self.concentrator.start)
        await asyncio.to_thread(self._upload)
        while self.grid is not None:  # today's points, a minute after each quarter hour
            await asyncio.to_thread(self._upload_today)
            await asyncio.sleep(CURVE_STEP_S - time.time() % CURVE_STEP_S + 60.0)

    def _upload_today(self) -> None:
        with self._uploading:
            if self.grid is not None and not self._stopping.is_set():
                sent = self.grid.upload_today(self._stopping, time.time())
                log.info("the grid's concentrators uploaded today so far: %d messages", sent)

    def _upload(self) -> None:
        """The uploads, in a thread; `stop` lets one under way finish."""
        with self._uploading:
            if self.concentrator is not None and not self._stopping.is_set():
                yesterday = datetime.now(TZ).replace(
                    hour=0, minute=0, second=0, microsecond=0
                ) - timedelta(days=1)
                sent = self.concentrator.upload_day(yesterday)
                log.info(
                    "concentrator demo-jzq uploaded %d messages for %s", sent, yesterday.date()
                )
            if self.grid is not None:
                try:
                    self._grid_past_days()
                except psycopg.Error as exc:  # e.g. the database stopping under a Ctrl-C
                    log.warning("the grid's notices and day jobs were not set up: %s", exc)

    def _grid_past_days(self) -> None:
        """The grid's concentrators upload the past days (unless stored: a restart); once
        stored, the planned outage's notice is entered, and — when those days were new — the
        once-a-day jobs (diagnostics, abnormal readings), whose first pass came before the
        demo's history arrived all at once, are told to see them again (a site's days arrive
        before they are settled)."""
        meters = [m for c in self.grid.concentrators for m in c.meters]
        want = len(meters) * PAST_DAYS  # each meter's frozen register at each past day's end
        with psycopg.connect(self.url, autocommit=True) as conn:

            def stored() -> int:
                return conn.execute(
                    "SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id"
                    " WHERE d.name = ANY(%s) AND r.quantity = '1.8.0*d' AND r.ts <= %s",
                    (meters, self.grid.today()),
                ).fetchone()[0]

            before = stored()
            if before >= want:  # a restart: the history is there (a concentrator would not
                log.info("the grid's past days are stored already")  # send it again)
            else:
                sent = self.grid.upload_past_days(self._stopping)
                log.info("the grid's concentrators uploaded %d messages", sent)
            deadline = time.monotonic() + STORED_WITHIN_S
            got = before
            while got < want and time.monotonic() < deadline and not self._stopping.is_set():
                self._stopping.wait(0.5)
                got = stored()
            if got < want:
                log.warning("the grid's past days: %d of %d frozen registers stored", got, want)
                return
            for notice in self.grid.notices(self.grid.today()):
                known = conn.execute(
                    "SELECT 1 FROM outage_notices WHERE scope = %s AND name = %s AND start = %s",
                    (notice["scope"], notice["name"], notice["start"]),
                ).fetchone()
                if known is None:  # a second run of the demo keeps the first run's
                    add_notice(conn, **notice)
            if before < want:
                conn.execute(
                    "DELETE FROM analytics_watermarks WHERE job = ANY(%s)",
                    (["diagnostics", "anomalies"],),
                )

    async def stop(self) -> None:
        self._stopping.set()
        if await asyncio.to_thread(self._uploading.acquire, True, UPLOAD_GRACE_S):
            self._uploading.release()
        with contextlib.suppress(Exception):
            if self.concentrator is not None:
                await asyncio.to_thread(self.concentrator.stop)
        if self.grid is not None:
            with contextlib.suppress(Exception):
                await self.grid.stop()
        await self.modbus.stop()
        if self.o.rs485_meters:
            await self.bus.stop()
        if self.monitor is not None:
            await self.monitor.stop()
        await self.line.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
