"""The composition root: builds every part from the settings and runs them in one process,
each as a named service under one supervisor (`gridread.services`).

simulators (demo only) → collectors (scheduler) → writer → PostgreSQL ← API
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.live import LivePolicy
from api.security_policy import SecurityPolicy
from collectors.base import PolledCollector, ReadingSink
from collectors.dlt645.collector import BusPolicy, Dlt645BusCollector, MeterRef
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import transport_for
from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.voltage_monitor import VoltageMonitorCollector
from collectors.mqtt.auth import MqttAuth
from collectors.mqtt.rereads import ConcentratorRereader
from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.analytics_service import analytics_service, lineloss_policy
from gridread.control_executor import control_service
from gridread.database import check_connection, start_embedded
from gridread.inventory import Inventory, store_inventory, stored_nominals
from gridread.inventory_overrides import FILE_ACTOR
from gridread.services import (
    Service,
    ServiceError,
    Stage,
    Supervisor,
    SupervisorPolicy,
    exit_now,
    run_process,
)
from gridread.settings import Settings
from ingest.compression import ensure_compression_policy
from ingest.plausibility import Screen, shipped_rules
from ingest.retry import Backoff
from ingest.rollups_retention import apply_retention
from ingest.schema import StorageMode, ensure_partitions, migrate
from ingest.store import CollectorStore, PgCollectorStore
from ingest.writer import ReadingWriter

log = logging.getLogger("gridread")

MAINTENANCE_INTERVAL_S = 3600.0


def database_url(settings: Settings) -> str:
    """The configured database, or the embedded one; checked and migrated."""
    url = settings.database_url or start_embedded(Path(settings.data_dir))
    check_connection(url)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, storage=settings.storage, timezone=settings.timezone)
        ensure_compression_policy(conn, settings.compress_after_days)
    return url


def store_devices(url: str, inventory: Inventory) -> dict[str, int]:
    """Store the inventory in the database; return device name → id."""
    with psycopg.connect(url) as conn:
        return store_inventory(conn, inventory, actor=FILE_ACTOR)


def build_collectors(
    inventory: Inventory, ids: dict[str, int], settings: Settings, store: CollectorStore
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
            timeout=settings.modbus_request_timeout,  # one request; poll_timeout: the poll
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
            store=store,
            timeout=settings.modbus_request_timeout,  # one request; poll_timeout: the poll
        )
        out.append((vm, monitor.poll_interval))
    return out


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: gridread stops the parts in order."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build_buses(
    inventory: Inventory, ids: dict[str, int], sink: ReadingSink, store: CollectorStore
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
                store=store,
                timezone=spec.timezone,
                policy=BusPolicy(
                    instant_interval=spec.instant_interval,
                    clock_bound=spec.clock_bound,
                    reread_days=spec.reread_days,
                ),
            )
        )
    return out


@dataclass
class Running:
    """What an `on_ready` hook may look at: the parts as they are now (a restarted service
    gets new ones)."""

    mqtt_worker: MqttIngestWorker | None = None
    url: str = ""  # the database's
    buses: dict[str, Dlt645BusCollector] = field(default_factory=dict)  # running, by name


async def serve(
    settings: Settings,
    url: str,
    inventory: Inventory,
    ids: dict[str, int],
    *,
    on_ready: Callable[[Running], Awaitable[None]] | None = None,
) -> None:
    """Run writer, API, collectors and maintenance as supervised services until SIGINT or
    SIGTERM; then stop them in order: collectors, the writer's queue, the API.

    Raises SystemExit (code 1) when the process cannot go on (the API cannot start, the writer
    fails); exits at once, code 1, when a service ignores its cancellation past
    ``shutdown_timeout`` (the embedded database is stopped first)."""
    supervisor = Supervisor(supervisor_policy(settings))
    supervisor.handle_signals()
    writer = _writer(settings, url, plausibility_screen(settings, inventory.nominals(ids)))
    api = _ApiServer(
        uvicorn.Config(
            api_app(url, settings, service_states=supervisor.snapshot),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="on",
        )
    )
    supervisor.start(_writer_service(writer))
    supervisor.start(_api_service(api, f"{settings.api_host}:{settings.api_port}"))
    while not api.started and not supervisor.stopping.is_set():
        await asyncio.sleep(0.05)  # uvicorn has no "started" event to wait on
    store: PgCollectorStore | None = None
    if api.started:
        running = Running(url=url)
        # the collectors' one pool
        store = await PgCollectorStore.open(url, notify=settings.live_notify)
        services = collector_services(settings, url, inventory, ids, writer, store, running)
        for service in services:
            supervisor.start(service)
        if on_ready is not None:
            supervisor.start(Service("on-ready", lambda: on_ready(running)))
        await supervisor.wait()
    log.info("stopping: collectors, then the writer's queue, then the API")
    stuck = await supervisor.shutdown()
    if store is not None:
        await store.close()
    log.info(
        "writer: %d readings written, %d duplicates skipped, %d dead-lettered",
        writer.totals.written,
        writer.totals.duplicates,
        writer.totals.dead,
    )
    if stuck:
        exit_now(1)
    if supervisor.fatal:
        raise SystemExit(f"gridread: error: {supervisor.fatal}")


def collector_services(
    settings: Settings,
    url: str,
    inventory: Inventory,
    ids: dict[str, int],
    sink: ReadingWriter,
    store: CollectorStore,
    running: Running,
) -> list[Service]:
    """One service per thing to do; none for what is not configured. Each run builds its
    parts afresh, so a restart starts from a clean state."""
    services = []
    maps = inventory.maps
    if inventory.devices:
        modbus = Inventory(inventory.devices, maps)
        services.append(Service("modbus-poller", lambda: _poll(modbus, ids, settings, store, sink)))
    if inventory.monitors:
        monitors = Inventory([], maps, monitors=inventory.monitors)
        services.append(
            Service("voltage-monitors", lambda: _poll(monitors, ids, settings, store, sink))
        )
    for spec in inventory.buses:
        one = Inventory([], maps, buses=[spec])
        services.append(
            Service(f"bus:{spec.name}", lambda one=one: _run_bus(one, ids, sink, store, running))
        )
    if settings.mqtt_host:

        async def ingest() -> None:
            running.mqtt_worker = MqttIngestWorker(mqtt_settings(settings), sink, store)
            await running.mqtt_worker.run()

        async def rereads() -> None:
            rereader = ConcentratorRereader(
                host=settings.mqtt_host or "127.0.0.1",
                port=settings.mqtt_port,
                store=store,
                timezone=settings.timezone,
                start_timeout=settings.mqtt_connect_timeout,
                auth=mqtt_auth(settings, control=True),
            )
            await rereader.run(first_delay=60)

        services.append(Service("mqtt-ingest", ingest))
        services.append(Service("concentrator-rereads", rereads))
    services.append(control_service(settings, inventory, ids, running.buses, store))
    services.append(Service("partition-maintenance", lambda: _maintenance(url, settings)))
    services.append(analytics_service(url, settings))
    return services


async def _poll(
    inventory: Inventory,
    ids: dict[str, int],
    settings: Settings,
    store: CollectorStore,
    sink: ReadingSink,
) -> None:
    scheduler = PollScheduler(
        sink, PollPolicy(timeout=settings.poll_timeout, retries=settings.poll_retries)
    )
    for collector, interval in build_collectors(inventory, ids, settings, store):
        scheduler.add(collector, interval)
    await scheduler.run()


async def _run_bus(
    inventory: Inventory,
    ids: dict[str, int],
    sink: ReadingSink,
    store: CollectorStore,
    running: Running,
) -> None:
    [bus] = build_buses(inventory, ids, sink, store)
    running.buses[bus.name] = bus  # load control sends its relay commands through it
    await bus.run()


def plausibility_screen(settings: Settings, nominals: dict[int, float]) -> Screen:
    """The shipped rules with the devices' nominal voltages (device id → V; the others: the
    ``nominal_voltage`` setting)."""
    return shipped_rules().for_devices(nominals, settings.nominal_voltage)


def _writer(settings: Settings, url: str, screen: Screen) -> ReadingWriter:
    return ReadingWriter(
        url,
        batch_size=settings.writer_batch_size,
        max_delay=settings.writer_max_delay,
        max_queued=settings.writer_max_queued,
        screen=screen,
        notify=settings.live_notify,
    )


def _writer_service(writer: ReadingWriter) -> Service:
    async def stop() -> None:  # write what is queued; run() then ends by itself
        await writer.close()
        await writer.flush()

    return Service("writer", writer.run, stop=stop, critical=True, stage=Stage.WRITER)


def _api_service(api: _ApiServer, where: str) -> Service:
    ended = asyncio.Event()

    async def run() -> None:
        ended.clear()
        try:
            await api.serve()
        except SystemExit:  # uvicorn's way of saying it could not start (port taken, …)
            raise ServiceError(f"the API could not start on {where}") from None
        finally:
            ended.set()

    async def stop() -> None:  # uvicorn closes its connections and runs the lifespan's end
        live = getattr(api.config.app.state, "live", None)
        if live is not None:
            live.close()  # its streams never end by themselves: uvicorn would wait on them
        api.should_exit = True
        await ended.wait()

    return Service("api", run, stop=stop, critical=True, stage=Stage.API)


def supervisor_policy(settings: Settings) -> SupervisorPolicy:
    return SupervisorPolicy(
        backoff=Backoff(
            initial=min(1.0, settings.service_restart_max_delay),
            maximum=settings.service_restart_max_delay,
        ),
        stable_after=settings.service_stable_after,
        shutdown_timeout=settings.shutdown_timeout,
    )


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
        auth=mqtt_auth(settings),
    )


def mqtt_auth(settings: Settings, *, control: bool = False) -> MqttAuth:
    """The ingest account's credentials, or with `control` the re-read requester's."""
    user = settings.mqtt_control_username if control else settings.mqtt_username
    secret = settings.mqtt_control_password if control else settings.mqtt_password
    return MqttAuth(
        user,
        secret.get_secret_value() if secret is not None else None,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_ca_file,
    )


async def ingest_mqtt(settings: Settings, url: str) -> None:
    """A stand-alone MQTT ingest worker (scale out: run several, same group, own client ids).
    Stops on SIGINT/SIGTERM after committing and acknowledging what it has taken."""
    supervisor = Supervisor(supervisor_policy(settings))
    supervisor.handle_signals()
    with psycopg.connect(url) as conn:  # the nominal voltages of the devices stored
        nominals = stored_nominals(conn)
    writer = _writer(settings, url, plausibility_screen(settings, nominals))
    workers: list[MqttIngestWorker] = []
    store = await PgCollectorStore.open(url, notify=settings.live_notify)  # closed after the stop

    async def ingest() -> None:
        workers.append(MqttIngestWorker(mqtt_settings(settings), writer, store))
        await workers[-1].run()

    async def drain() -> None:  # store and acknowledge what was taken, then be cancelled
        if workers:
            await workers[-1].drain()

    try:
        supervisor.start(_writer_service(writer))
        supervisor.start(Service("mqtt-ingest", ingest, stop=drain))
        await supervisor.wait()
        stuck = await supervisor.shutdown()
    finally:
        await store.close()
    log.info(
        "mqtt-ingest %s: %d messages; %d readings written, %d duplicates, %d dead-lettered",
        settings.mqtt_client_id,
        sum(w.handled for w in workers),
        writer.totals.written,
        writer.totals.duplicates,
        writer.totals.dead,
    )
    if stuck:
        exit_now(1)
    if supervisor.fatal:
        raise SystemExit(f"gridread: error: {supervisor.fatal}")


def api_app(
    url: str, settings: Settings, *, service_states: Callable[[], list[dict]] = list
) -> FastAPI:
    """The API with the settings it needs: the site's zone and the analytics settings."""
    return create_app(
        url,
        timezone=settings.timezone,
        service_states=service_states,
        analytics=lineloss_policy(settings),
        token_lifetime=settings.auth_token_lifetime,
        live_feed=LivePolicy(
            max_items=settings.live_buffer_size,
            max_age=settings.live_buffer_seconds,
            alarm_kinds=frozenset(settings.live_alarm_kinds),
            area_refresh=settings.live_area_refresh,
            streams_per_caller=settings.live_streams_per_caller,
            recheck=settings.live_recheck_seconds,
            voltage_limits=tuple(settings.pq_voltage_limits),
            nominal_voltage=settings.nominal_voltage,
        ),
        audit_edit_flag_share=settings.audit_edit_flag_share,
        control_request_ttl=settings.control_request_ttl,
        security=SecurityPolicy(
            login_concurrency=settings.login_concurrency,
            login_max_failures=settings.login_max_failures,
            login_max_failures_ip=settings.login_max_failures_ip,
            login_lockout=settings.login_lockout,
            login_lockout_max=settings.login_lockout_max,
            audit_head_interval=settings.audit_head_interval,
        ),
    )


async def _maintenance(url: str, settings: Settings) -> None:
    """Create tomorrow's partitions ahead of time (native partitioning only); remove readings
    past their retention (both modes)."""
    while True:
        try:

            def run() -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    ensure_partitions(conn)
                    apply_retention(
                        conn,
                        instant_days=settings.retention_instant_days,
                        register_days=settings.retention_register_days,
                    )

            await asyncio.to_thread(run)
        except psycopg.Error as exc:
            log.warning("partition maintenance failed (will retry): %s", exc)
        await asyncio.sleep(MAINTENANCE_INTERVAL_S)


__all__ = [
    "StorageMode",
    "analytics_service",
    "api_app",
    "build_buses",
    "build_collectors",
    "collector_services",
    "database_url",
    "ingest_mqtt",
    "run_process",
    "serve",
    "store_devices",
]
