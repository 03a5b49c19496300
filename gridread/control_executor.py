"""Wires the load-control executor (collectors/control.py) into the runtime: which device is
whose (the inventory), the running bus collectors, the settings.

A DL/T 645 meter is commanded through the collector of its bus as it runs now (a restarted
bus service registers its new collector), so a command waits its turn between polls. A
Modbus TCP meter gets a connection of its own for the command. Meters behind concentrators
(MQTT) and anything else: a clear reason, and the command fails with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from collectors.control import (
    ControlExecutor,
    ControlTarget,
    Dlt645RelayTarget,
    DltRelays,
    ModbusRelayTarget,
    Resolver,
)
from collectors.dlt645.context import MeterRef
from collectors.modbus.relay import ModbusRelay
from gridread.inventory import Inventory
from gridread.services import Service
from gridread.settings import Settings
from ingest.store import PgCollectorStore

MQTT_REFUSAL = (
    "{name} is read through concentrator {conc} (MQTT): gridread sends it no relay commands"
)


def resolver(
    settings: Settings,
    inventory: Inventory,
    ids: Mapping[str, int],
    buses: Mapping[str, DltRelays],
) -> Resolver:
    """Device id → its control target (built afresh per command) or why there is none.
    `buses`: bus name → its running collector (looked up at each command)."""
    by_id = {v: k for k, v in ids.items()}
    modbus = {d.name: d for d in inventory.devices}
    on_bus = {m.name: (b.name, m) for b in inventory.buses for m in b.meter}
    behind = {m: c.name for c in inventory.concentrators for m in c.meters}
    password = settings.control_dlt645_password
    valid_for = timedelta(minutes=settings.control_relay_valid_minutes)

    def resolve(device_id: int) -> ControlTarget | str:
        name = by_id.get(device_id)
        if name is None:
            return f"device {device_id} is not in this gridread's configuration"
        if name in modbus:
            spec = modbus[name]
            relay = inventory.maps[spec.register_map].relay
            if relay is None:
                return f"{name}: register map {spec.register_map} has no [relay]"
            return ModbusRelayTarget(
                ModbusRelay(
                    host=spec.host,
                    port=spec.port,
                    unit_id=spec.unit_id,
                    spec=relay,
                    timeout=settings.modbus_request_timeout,
                ),
                name,
            )
        if name in on_bus:
            bus_name, meter = on_bus[name]
            bus = buses.get(bus_name)
            if bus is None:
                return f"{name}: bus {bus_name} is not running"
            if password is None:
                return f"{name}: no DL/T 645 relay password (setting control_dlt645_password)"
            return Dlt645RelayTarget(
                bus,
                MeterRef(device_id, name, meter.address),
                password.get_secret_value(),
                settings.control_dlt645_operator,
                valid_for,
            )
        if name in behind:
            return MQTT_REFUSAL.format(name=name, conc=behind[name])
        return f"{name} has no relay gridread can operate"

    return resolve


def control_service(
    settings: Settings,
    inventory: Inventory,
    ids: Mapping[str, int],
    buses: Mapping[str, DltRelays],
    store: PgCollectorStore,
) -> Service:
    async def run() -> None:
        await ControlExecutor(
            store.pool,
            resolver(settings, inventory, ids, buses),
            interval=settings.control_poll_interval,
            timeout=settings.control_command_timeout,
        ).run()

    return Service("control-executor", run)
