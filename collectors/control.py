"""The load-control executor: carries out approved commands on the devices that own them.

Each round it expires the requests nobody approved in time, then claims approved commands
one at a time (ingest/control.py: ``FOR UPDATE SKIP LOCKED``) and runs each on its target:

* a DL/T 645 meter through its bus's collector (`Dlt645RelayTarget`): relay control 1C with
  the meter's password and operator code, then status word 3 (04000503) read back; the bus
  serialises it with its polls (one request in flight);
* a Modbus meter (`ModbusRelayTarget`): its relay coil written, then the coil or discrete
  input read back (the register map's ``[relay]``), or its demand-limit register.

The outcome is recorded as the meter said it: succeeded with the reply and the state read
back, or failed with the reason (timeout, refusal such as a wrong password, a relay that
did not move, a device gridread cannot control). A failing command never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from collectors.dlt645.codec import Frame, RelayAction, Status3
from collectors.dlt645.context import MeterRef
from collectors.exceptions import DeviceError
from collectors.modbus.relay import ModbusRelay
from ingest import control

log = logging.getLogger(__name__)

COMMANDS = Counter(
    "gridread_control_commands",
    "Load-control commands the executor finished, by action and outcome",
    ["action", "status"],
)
EXPIRED = Counter("gridread_control_expired", "Load-control requests expired unapproved")


class ExecutionFailed(Exception):
    """The device answered, but not as the command needs; `result` keeps what it said."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class ControlTarget(Protocol):
    async def execute(self, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Carry out `action`; return what the device said. Raises DeviceError (no reply,
        refused) or ExecutionFailed (answered, but the state read back is not the one
        asked)."""
        ...


class DltRelays(Protocol):  # what a Dlt645BusCollector offers
    async def relay(
        self,
        meter: MeterRef,
        action: RelayAction,
        *,
        password: str,
        operator: str,
        valid_for: timedelta = ...,
    ) -> Frame: ...

    async def relay_state(self, meter: MeterRef) -> tuple[Status3, Frame]: ...


def _hex(frame: Frame) -> str:
    return frame.to_bytes(preamble=b"").hex(" ").upper()


def _check(action: str, relay_open: bool, result: dict[str, Any], device: str) -> None:
    want_open = action == "disconnect"
    if relay_open != want_open:
        raise ExecutionFailed(
            f"{device}: the meter accepted {action} but its relay reads"
            f" {'open' if relay_open else 'closed'}",
            result,
        )


@dataclass
class Dlt645RelayTarget:
    bus: DltRelays
    meter: MeterRef
    password: str  # 8 hex digits, privilege level first
    operator: str  # 8 hex digits
    valid_for: timedelta = timedelta(minutes=10)

    async def execute(self, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
        code = {"disconnect": RelayAction.DISCONNECT, "reconnect": RelayAction.CONNECT_ALLOWED}
        if action not in code:
            raise ExecutionFailed(
                f"{self.meter.name}: DL/T 645 relay control (1C) has no {action}", {}
            )
        reply = await self.bus.relay(
            self.meter,
            code[action],
            password=self.password,
            operator=self.operator,
            valid_for=self.valid_for,
        )
        status, state_reply = await self.bus.relay_state(self.meter)
        relay_open = Status3.RELAY_OPEN in status
        result = {
            "protocol": "dlt645",
            "reply": _hex(reply),
            "status_word_3": f"{int(status):04X}",
            "status_reply": _hex(state_reply),
            "relay": "open" if relay_open else "closed",
        }
        _check(action, relay_open, result, self.meter.name)
        return result


@dataclass
class ModbusRelayTarget:
    relay: ModbusRelay
    name: str

    async def execute(self, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"protocol": "modbus_tcp", "where": self.relay.where}
        try:
            if action == "demand_limit":
                result["demand_limit_kw"] = await self.relay.set_demand_limit(
                    float(parameters["kw"])
                )
                if abs(result["demand_limit_kw"] - float(parameters["kw"])) > 1e-6:
                    raise ExecutionFailed(
                        f"{self.name}: demand limit reads {result['demand_limit_kw']} kW"
                        f" after writing {parameters['kw']} kW",
                        result,
                    )
                result["relay"] = "closed" if await self.relay.is_closed() else "open"
                return result
            await self.relay.switch(close=action == "reconnect")
            closed = await self.relay.is_closed()
            result["relay"] = "closed" if closed else "open"
            _check(action, not closed, result, self.name)
            return result
        finally:
            self.relay.close()


def refusal(
    *, name: str, kind: str, protocol: str, attributes: dict[str, Any], regmap: Any, action: str
) -> str | None:
    """Why `action` cannot be done on this device (a stored device row), or None. `regmap`:
    a Modbus device's loaded RegisterMap, or None when it could not be loaded here."""
    if kind != "meter":
        return f"{name} is a {kind}: only meters have a relay"
    if protocol == "mqtt":
        conc = attributes.get("concentrator", "a concentrator")
        return f"{name} is read through {conc} (MQTT): gridread sends it no relay commands"
    if protocol == "dlt645":
        if action == "demand_limit":
            return f"{name}: DL/T 645 relay control (1C) has no demand limit"
        return None
    if protocol == "modbus_tcp":
        if regmap is None:
            return None  # a map by path: the executor checks it
        if regmap.relay is None:
            return f"{name}: its register map has no [relay] (no load switch)"
        if action == "demand_limit" and regmap.relay.demand_limit is None:
            return f"{name}: its register map's [relay] has no demand_limit register"
        return None
    return f"{name} ({protocol}) has no relay gridread can operate"


Resolver = Callable[[int], ControlTarget | str]
"""Device id → its target, or why gridread cannot control it (a clear one-line reason)."""


class ControlExecutor:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        resolve: Resolver,
        *,
        interval: float = 2.0,
        timeout: float = 30.0,
    ) -> None:
        self.pool = pool
        self.resolve = resolve
        self.interval = interval
        self.timeout = timeout  # one command, end to end

    async def run(self) -> None:
        # a command still `executing` past its timeout was cut off by a stop or crash
        async with self.pool.connection() as conn:
            stranded = await control.fail_stranded(conn, timedelta(seconds=self.timeout))
        if stranded:
            log.warning("control: commands %s were cut off while executing: failed", stranded)
        while True:
            await self.step()
            await asyncio.sleep(self.interval)

    async def step(self) -> list[dict[str, Any]]:
        """Expire what is due, then run every approved command; return the finished rows."""
        async with self.pool.connection() as conn:
            expired = await control.expire_due(conn)
        EXPIRED.inc(len(expired))
        if expired:
            log.info("control: expired unapproved commands %s", expired)
        done = []
        while True:
            async with self.pool.connection() as conn:
                command = await control.claim_next(conn)
            if command is None:
                return done
            done.append(await self.execute(command))

    async def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            target = self.resolve(command["device_id"])
            if isinstance(target, str):
                error = target
            else:
                result = await asyncio.wait_for(
                    target.execute(command["action"], command["parameters"]), self.timeout
                )
        except ExecutionFailed as exc:
            result, error = exc.result, str(exc)
        except DeviceError as exc:
            error = f"{exc.kind}: {exc}"
        except TimeoutError:
            error = f"no outcome within {self.timeout:g} s (setting control_command_timeout)"
        except Exception as exc:  # a bug must not leave the command executing forever
            log.exception("control: command %s crashed", command["id"])
            error = f"internal error: {exc!r}"
        async with self.pool.connection() as conn:
            row = await control.finish(conn, command["id"], result=result, error=error)
        COMMANDS.labels(row["action"], row["status"]).inc()
        log.info(
            "control: command %s (%s on %s) %s%s",
            row["id"],
            row["action"],
            row["device"],
            row["status"],
            f": {error}" if error else "",
        )
        return row
