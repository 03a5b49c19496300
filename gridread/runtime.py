"""The composition root: builds every part from the settings and runs them in one process.

simulators (demo only) → collectors (scheduler) → writer → PostgreSQL ← API
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import uvicorn

from api.app import create_app
from collectors.base import PolledCollector, ReadingSink
from collectors.dlt645.collector import BusPolicy, Dlt645BusCollector, MeterRef
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import transport_for
from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.voltage_monitor import VoltageMonitorCollector
from collectors.mqtt.rereads import ConcentratorRereader
from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.database import check_connection, start_embedded
from gridread.inventory import Inventory, store_inventory
from gridread.settings import Settings
from ingest.schema import StorageMode, ensure_partitions, migrate
from ingest.writer import ReadingWriter

log = logging.getLogger("gridread")

MAINTENANCE_INTERVAL_S = 3600.0


def database_url(settings: Settings) -> str:
    """The configured database, or the embedded one; checked and migrated."""
    url = settings.database_url or start_embedded(Path(settings.data_dir))
    check_connection(url)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


def store_devices(url: str, inventory: Inventory) -> dict[str, int]:
    """Store the inventory in the database; return device name → id."""
    with psycopg.connect(url) as conn:
        return store_inventory(conn, inventory, actor="config-file")


def build_collectors(
    inventory: Inventory, ids: dict[str, int], settings: Settings, url: str = ""
) -> list[tuple[PolledCollector, float]]:
    """One collector per device, with its poll interval. Call inside the event loop."""
    out: list[tuple[PolledCollector, float]] = []
    for spec in inventory.devices:
        regmap = inventory.maps[spec.register_map]
        collector = ModbusTcpCollector(
            device_id=ids[spec.name],
            device_name=spec.name,
            host=spec.host,
            port=spec.port,
            unit_id=spec.unit_id,
            register_map=regmap,
            # the poll timeout covers every request of one poll
            timeout=settings.poll_timeout / max(1, len(regmap.plan())),
        )
        out.append((collector, spec.poll_interval))
    for monitor in inventory.monitors:
        vm = VoltageMonitorCollector(
            device_id=ids[monitor.name],
            device_name=monitor.name,
            port=monitor.port,
            unit_id=monitor.unit_id,
            baud=monitor.baud,
            parity=monitor.parity,
            conninfo=url,
            timeout=settings.poll_timeout / 3,  # three requests a poll
        )
        out.append((vm, monitor.poll_interval))
    return out


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: gridread stops the parts in order."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build_buses(
    inventory: Inventory, ids: dict[str, int], sink: ReadingSink, url: str
) -> list[Dlt645BusCollector]:
    """One collector per RS-485 bus, each to run in its own task."""
    out = []
    for spec in inventory.buses:
        bus = Dlt645Bus(
            transport_for(spec.port, baud=spec.baud, parity=spec.parity), BusTiming(baud=spec.baud)
        )
        out.append(
            Dlt645BusCollector(
                name=spec.name,
                bus=bus,
                meters=[MeterRef(ids[m.name], m.name, m.address) for m in spec.meter],
                sink=sink,
                conninfo=url,
                timezone=spec.timezone,
                policy=BusPolicy(
                    instant_interval=spec.instant_interval,
                    clock_bound=spec.clock_bound,
                    reread_days=spec.reread_days,
                ),
            )
        )
    return out


async def serve(
    settings: Settings,
    url: str,
    inventory: Inventory,
    ids: dict[str, int],
    *,
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
) -> None:
    """Run writer, collectors, API and maintenance until SIGINT/SIGTERM; stop them in order:
    stop polling, write what is queued, stop the API."""
    devices = build_collectors(inventory, ids, settings, url)
    writer = ReadingWriter(
        url,
        batch_size=settings.writer_batch_size,
        max_delay=settings.writer_max_delay,
        max_queued=settings.writer_max_queued,
    )
    scheduler = PollScheduler(
        writer, PollPolicy(timeout=settings.poll_timeout, retries=settings.poll_retries)
    )
    for collector, interval in devices:
        scheduler.add(collector, interval)
    api = _ApiServer(
        uvicorn.Config(
            create_app(url),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="on",
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    writer_task = asyncio.create_task(writer.run(), name="writer")
    api_task = asyncio.create_task(api.serve(), name="api")
    while not api.started:
        if api_task.done():  # e.g. the port is taken
            await api_task
            where = f"{settings.api_host}:{settings.api_port}"
            raise SystemExit(f"gridread: error: the API could not start on {where}")
        await asyncio.sleep(0.05)
    poll_task = asyncio.create_task(scheduler.run(), name="scheduler")
    bus_tasks = {
        asyncio.create_task(bus.run(), name=f"bus {bus.name}")
        for bus in build_buses(inventory, ids, writer, url)
    }
    if settings.mqtt_host:
        worker = MqttIngestWorker(mqtt_settings(settings), writer, url)
        bus_tasks.add(asyncio.create_task(worker.run(), name="mqtt-ingest"))
        rereader = ConcentratorRereader(
            host=settings.mqtt_host, port=settings.mqtt_port, conninfo=url
        )
        bus_tasks.add(
            asyncio.create_task(rereader.run(first_delay=60), name="concentrator-rereads")
        )
    maintenance_task = asyncio.create_task(_maintenance(url), name="maintenance")
    if on_ready is not None:
        result = on_ready()
        if asyncio.iscoroutine(result):
            await result
    watched = {poll_task, writer_task, api_task, maintenance_task, *bus_tasks}
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait(watched | {stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in done - {stopper}:
        if task.exception():
            log.error("%s stopped: %r", task.get_name(), task.exception())
    log.info("stopping: polls, then the writer's queue, then the API")
    for task in (poll_task, maintenance_task, *bus_tasks):
        task.cancel()
    await asyncio.gather(poll_task, maintenance_task, *bus_tasks, return_exceptions=True)
    await writer.close()
    await asyncio.gather(writer_task, return_exceptions=True)
    log.info(
        "writer: %d readings written, %d duplicates skipped, %d dead-lettered",
        writer.totals.written,
        writer.totals.duplicates,
        writer.totals.dead,
    )
    api.should_exit = True
    await asyncio.gather(api_task, return_exceptions=True)
    stopper.cancel()


def mqtt_settings(settings: Settings) -> MqttSettings:
    return MqttSettings(
        host=settings.mqtt_host or "127.0.0.1",
        port=settings.mqtt_port,
        group=settings.mqtt_group,
        client_id=settings.mqtt_client_id,
        max_unacked=settings.mqtt_max_unacked,
        not_before=settings.mqtt_not_before,
        max_future_s=settings.mqtt_max_future,
        dead_letter_raw_max=settings.dead_letter_raw_max,
    )


async def ingest_mqtt(settings: Settings, url: str) -> None:
    """A stand-alone MQTT ingest worker (scale out: run several, same group, own client ids).
    Stops on SIGINT/SIGTERM after committing and acknowledging what it has taken."""
    writer = ReadingWriter(
        url,
        batch_size=settings.writer_batch_size,
        max_delay=settings.writer_max_delay,
        max_queued=settings.writer_max_queued,
    )
    worker = MqttIngestWorker(mqtt_settings(settings), writer, url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    writer_task = asyncio.create_task(writer.run(), name="writer")
    worker_task = asyncio.create_task(worker.run(), name="mqtt-ingest")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({writer_task, worker_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await worker.drain()
    worker_task.cancel()
    await asyncio.gather(worker_task, return_exceptions=True)
    await writer.close()
    await asyncio.gather(writer_task, return_exceptions=True)
    stopper.cancel()
    log.info(
        "mqtt-ingest %s: %d messages; %d readings written, %d duplicates, %d dead-lettered",
        settings.mqtt_client_id,
        worker.handled,
        writer.totals.written,
        writer.totals.duplicates,
        writer.totals.dead,
    )


async def _maintenance(url: str) -> None:
    """Create tomorrow's partitions ahead of time (native partitioning only)."""
    while True:
        try:

            def run() -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    ensure_partitions(conn)

            await asyncio.to_thread(run)
        except psycopg.Error as exc:
            log.warning("partition maintenance failed (will retry): %s", exc)
        await asyncio.sleep(MAINTENANCE_INTERVAL_S)


__all__ = [
    "StorageMode",
    "build_buses",
    "build_collectors",
    "database_url",
    "serve",
    "store_devices",
]
