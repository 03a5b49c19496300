"""A load-control rig: DL/T 645 meters on a real pty bus polled by their running collector,
Modbus TCP meters on a real socket, PostgreSQL, and the executor wired as the runtime wires
it (gridread/control_executor.py). Shared by the tests/test_control*.py files."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from collectors.control import ControlExecutor
from collectors.dlt645.collector import BusPolicy, Dlt645BusCollector, MeterRef
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import SerialTransport
from collectors.modbus.registermap import load_register_map
from gridread.control_executor import resolver
from gridread.inventory import Inventory, store_inventory
from gridread.settings import Settings
from gridread.specs import BusMeterSpec, BusSpec, ConcentratorSpec, DeviceSpec
from ingest import control
from ingest.store import PgCollectorStore
from ingest.writer import ReadingWriter
from simulators.dlt645_bus import DLT645BusSimulator, make_meters
from simulators.meter_model import MeterModel
from simulators.modbus_meter import ManualClock, ModbusMeterSimulator

BAUD = 38_400  # a pty carries any rate; a fast one keeps the suite quick
PASSWORD = "02123456"  # the simulated meters' (SimMeter.password)
MAP = "three_phase_meter"


class ControlRig:
    """`dlt[i]` / `modbus[unit]`: the simulated meters; `names`: device name → id."""

    def __init__(self, url: str, *, password: str = PASSWORD, ttl: float = 900.0) -> None:
        self.url = url
        self.settings = Settings(
            control_dlt645_password=password,
            control_dlt645_operator="00000001",
            control_request_ttl=ttl,
            control_command_timeout=5.0,
            modbus_request_timeout=0.5,
        )
        self.dlt = make_meters(2)
        self.bus_sim = DLT645BusSimulator(self.dlt, baud=BAUD)
        regmap = load_register_map(MAP)
        self.modbus = {1: MeterModel(base_power_kw=3.0), 2: MeterModel(base_power_kw=5.0)}
        self.modbus_clock = ManualClock(time.time())  # the Modbus meters' time, moved by tests
        self.modbus_sim = ModbusMeterSimulator(regmap, self.modbus, clock=self.modbus_clock)
        self.regmap = regmap

    async def __aenter__(self) -> ControlRig:
        await self.bus_sim.start()
        await self.modbus_sim.start()
        inventory = Inventory(
            [
                DeviceSpec(
                    name=f"mb-{unit}",
                    protocol="modbus_tcp",
                    host="127.0.0.1",
                    port=self.modbus_sim.port,
                    unit_id=unit,
                    register_map=MAP,
                )
                for unit in self.modbus
            ],
            {MAP: self.regmap},
            buses=[
                BusSpec(
                    name="bus-1",
                    port=self.bus_sim.port,
                    baud=19200,  # the spec's list; the pty ignores it, the timing below uses BAUD
                    meter=[
                        BusMeterSpec(name=f"dlt-{i}", address=m.address)
                        for i, m in enumerate(self.dlt)
                    ],
                )
            ],
            concentrators=[ConcentratorSpec(name="jzq-1", area="a1", meters=["mqtt-1"])],
        )
        with psycopg.connect(self.url) as conn:
            self.names = store_inventory(conn, inventory, actor="test")
        self.store = await PgCollectorStore.open(self.url)
        self.writer = ReadingWriter(self.url, max_delay=0.05)
        self.writer_task = asyncio.create_task(self.writer.run())
        self.bus = Dlt645BusCollector(
            name="bus-1",
            bus=Dlt645Bus(
                SerialTransport(self.bus_sim.port, baud=BAUD), BusTiming(baud=BAUD, turnaround=0.1)
            ),
            meters=[
                MeterRef(self.names[f"dlt-{i}"], f"dlt-{i}", m.address)
                for i, m in enumerate(self.dlt)
            ],
            sink=self.writer,
            store=self.store,
            policy=BusPolicy(instant_interval=0.2),  # polls all the time: commands must queue
        )
        self.bus_task = asyncio.create_task(self.bus.run())
        self.buses = {"bus-1": self.bus}
        self.executor = ControlExecutor(
            self.store.pool,
            resolver(self.settings, inventory, self.names, self.buses),
            interval=self.settings.control_poll_interval,
            timeout=self.settings.control_command_timeout,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus_task.cancel()
        await asyncio.gather(self.bus_task, return_exceptions=True)
        await self.writer.close()
        await self.writer_task
        await self.store.close()
        await self.modbus_sim.stop()
        await self.bus_sim.stop()

    # -- the people's steps, as the API takes them ---------------------------------------

    async def request(
        self, device: str, action: str, by: str = "alice", **parameters: Any
    ) -> dict[str, Any]:
        async with self.store.pool.connection() as conn:
            return await control.request_command(
                conn,
                device_id=self.names[device],
                action=action,
                parameters=parameters,
                reason="test",
                requested_by=by,
                actor=by,
                ttl=timedelta(seconds=self.settings.control_request_ttl),
            )

    async def approve(self, command_id: int, by: str = "bob") -> dict[str, Any]:
        async with self.store.pool.connection() as conn:
            return await control.approve(conn, command_id, by=by, actor=by)

    async def run(self, device: str, action: str, **parameters: Any) -> dict[str, Any]:
        """Request (alice), approve (bob), execute: the finished row."""
        command = await self.request(device, action, **parameters)
        await self.approve(command["id"])
        [done] = await self.executor.step()
        return done

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            return conn.execute(sql, args).fetchall()

    def audit(self, command_id: int) -> list[tuple[str, str]]:
        return [
            (r["actor"], r["action"])
            for r in self.rows(
                "SELECT actor, action FROM audit_log WHERE entity = 'control_command'"
                " AND entity_id = %s ORDER BY id",
                str(command_id),
            )
        ]

    async def wait_polled(self, device: str, quantity: str, after: float) -> float:
        """The value of the first reading of `quantity` stamped after `after`, once stored."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await self.writer.flush()
            rows = self.rows(
                "SELECT value FROM readings WHERE device_id = %s AND quantity = %s"
                " AND ts > to_timestamp(%s) ORDER BY ts LIMIT 1",
                self.names[device],
                quantity,
                after,
            )
            if rows:
                return rows[0]["value"]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {quantity} of {device} after {after} within 10 s")
