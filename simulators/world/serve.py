"""Serve a world with the device simulators: its Modbus TCP gateway (feeder heads, area
totals) and one concentrator per public area over MQTT — what a demo or a test starts.

The inventory it hands out names the port the gateway really listens on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from collectors.modbus.registermap import load_register_map
from simulators.concentrator import SimConcentrator
from simulators.modbus_meter import ModbusMeterSimulator
from simulators.world.adapters import modbus_units
from simulators.world.world import World


class ServedWorld:
    def __init__(
        self,
        world: World,
        *,
        mqtt_host: str,
        mqtt_port: int,
        modbus_host: str = "127.0.0.1",
        modbus_port: int = 0,
        register_map: str = "three_phase_meter",
        area_totals: str = "modbus",
        clock: Callable[[], float] = time.time,
        mqtt_accounts: Callable[[dict[str, list[str]]], dict[str, Any]] | None = None,
    ) -> None:
        self.world = world
        self.register_map = register_map
        self.area_totals = area_totals
        units = modbus_units(world, area_totals)
        self.modbus = ModbusMeterSimulator(
            load_register_map(register_map),
            {u: world.meter_model(m) for u, m in units.items()},
            host=modbus_host,
            port=modbus_port,
            clock=clock,
        )
        areas = world.inventory(area_totals=area_totals)["concentrator"]
        # the broker's accounts of the concentrators (name → its meters) → each one's
        # credentials (.username, .password), when the broker asks for them
        auth = mqtt_accounts({c["name"]: list(c["meters"]) for c in areas}) if mqtt_accounts else {}
        self.concentrators = [
            SimConcentrator(
                c["name"],
                {m: world.meter_model(m) for m in c["meters"]},
                host=mqtt_host,
                port=mqtt_port,
                username=getattr(auth.get(c["name"]), "username", None),
                password=getattr(auth.get(c["name"]), "password", None),
            )
            for c in areas
        ]

    async def start(self) -> None:
        await self.modbus.start()
        for c in self.concentrators:
            await asyncio.to_thread(c.start)

    async def stop(self) -> None:
        for c in self.concentrators:
            await asyncio.to_thread(c.stop)
        await self.modbus.stop()

    def inventory(self, **where: Any) -> dict[str, Any]:
        """The world's inventory with the gateway's real address."""
        return self.world.inventory(
            modbus_host=self.modbus.host,
            modbus_port=self.modbus.port,
            register_map=self.register_map,
            area_totals=self.area_totals,
            **where,
        )

    async def upload_day(self, day_start: datetime) -> int:
        """Every concentrator uploads its meters' day; returns the messages published."""
        sent = 0
        for c in self.concentrators:
            sent += await asyncio.to_thread(c.upload_day, day_start)
        return sent
