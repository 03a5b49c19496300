"""Named services under one supervisor: everything `run` starts (pollers, bus tasks, MQTT
workers, re-reader, maintenance, writer, API).

A service is a name and an async ``run()``; optionally a graceful ``stop()`` that returns
when ``run()`` may be cancelled without loss (the writer has written its queue, the MQTT
worker has acknowledged what it stored, the API has closed its connections).

* ``run()`` returning is "finished" (nothing more to do), never a reason to stop the process.
* ``run()`` raising is a failure: logged with its traceback, counted in
  ``gridread_service_restarts_total{service}``, restarted after a capped backoff, and shown as
  degraded until the service has run for ``stable_after`` seconds again.
* A *critical* service (the writer, the API) that fails or ends is one the process cannot go
  on without: everything stops and the exit code is 1.
* `shutdown()` stops the services stage by stage (collectors, then the writer, then the API)
  within one deadline: a graceful ``stop()`` first where there is one, then cancellation.
  A service that ignores its cancellation is reported, so the caller can exit anyway
  (`exit_now`); `run_process` bounds the wait for the threads of calls that never return.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, NoReturn

from prometheus_client import Counter

from gridread.database import stop_embedded
from ingest.retry import Backoff

log = logging.getLogger("gridread.services")

RESTARTS = Counter(
    "gridread_service_restarts", "Restarts of a service after it failed", ["service"]
)
GRACEFUL_SHARE = 0.75  # of a stage's time for stop(); the rest is for cancelling


class Stage(IntEnum):
    """Shutdown order: lower stages stop first."""

    COLLECTORS = 0
    WRITER = 1
    API = 2


class State(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # failed; waiting out the backoff
    FINISHED = "finished"  # ended by itself: nothing (more) to do
    FAILED = "failed"  # a critical service failed or ended: the process stops
    STOPPED = "stopped"  # stopped by shutdown()


class ServiceError(Exception):
    """A service cannot run, for a reason its message says in full (logged without traceback)."""


@dataclass(frozen=True)
class Service:
    name: str
    run: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]] | None = None
    critical: bool = False
    stage: Stage = Stage.COLLECTORS


@dataclass(frozen=True)
class SupervisorPolicy:
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=60.0))
    stable_after: float = 60.0  # a run this long resets the backoff and clears "degraded"
    shutdown_timeout: float = 8.0  # SIGTERM to every service stopped


@dataclass
class _Status:
    service: Service
    task: asyncio.Task | None = None
    state: State = State.RUNNING
    restarts: int = 0
    last_error: str | None = None
    failed_at: float | None = None  # loop time of the last failure


class Supervisor:
    def __init__(self, policy: SupervisorPolicy | None = None) -> None:
        self.policy = policy or SupervisorPolicy()
        self._status: dict[str, _Status] = {}
        self.stopping = asyncio.Event()  # a signal, or a critical service gone
        self.fatal: str | None = None  # why the process cannot go on

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)

    def start(self, service: Service) -> None:
        if service.name in self._status:
            raise ValueError(f"service {service.name!r} started twice")
        status = _Status(service)
        self._status[service.name] = status
        status.task = asyncio.create_task(self._supervise(status), name=service.name)

    async def wait(self) -> None:
        """Until SIGINT/SIGTERM, or a critical service failed."""
        await self.stopping.wait()

    def snapshot(self) -> list[dict]:
        """Every service's state, for /health."""
        now = asyncio.get_running_loop().time()
        out = []
        for s in self._status.values():
            recent = s.failed_at is not None and now - s.failed_at < self.policy.stable_after
            out.append(
                {
                    "name": s.service.name,
                    "state": s.state.value,
                    "restarts": s.restarts,
                    "last_error": s.last_error,
                    "degraded": s.state in (State.RESTARTING, State.FAILED)
                    or (s.state is State.RUNNING and recent),
                }
            )
        return out

    async def _supervise(self, status: _Status) -> None:
        service = status.service
        loop = asyncio.get_running_loop()
        delays = self.policy.backoff.delays()
        while True:
            status.state = State.RUNNING
            started = loop.time()
            try:
                await service.run()
            except asyncio.CancelledError:
                status.state = State.STOPPED
                raise
            except Exception as exc:
                status.failed_at = loop.time()
                status.last_error = f"{type(exc).__name__}: {exc}"
                if service.critical or self.stopping.is_set():
                    self._fail(status, exc)
                    return
                if loop.time() - started >= self.policy.stable_after:
                    delays = self.policy.backoff.delays()  # it had recovered: start over
                delay = next(delays)
                status.state = State.RESTARTING
                log.error(
                    "service %s failed; restarting in %.1f s",
                    service.name,
                    delay,
                    exc_info=not isinstance(exc, ServiceError),
                )
                await asyncio.sleep(delay)
                RESTARTS.labels(service.name).inc()
                status.restarts += 1
                continue
            if self.stopping.is_set():
                status.state = State.STOPPED
            elif service.critical:
                self._fail(status, None)
            else:
                status.state = State.FINISHED
                log.info("service %s finished: nothing more to do", service.name)
            return

    def _fail(self, status: _Status, exc: Exception | None) -> None:
        status.state = State.FAILED
        name = status.service.name
        if exc is None:
            log.error("service %s ended unexpectedly", name)
        else:
            log.error("service %s failed", name, exc_info=not isinstance(exc, ServiceError))
        if status.service.critical and self.fatal is None:
            self.fatal = str(exc) if isinstance(exc, ServiceError) else f"service {name} failed"
            self.stopping.set()

    async def shutdown(self) -> list[str]:
        """Stop every service, stage by stage, within the policy's deadline; return the names
        of those that did not stop (they ignored their cancellation)."""
        loop = asyncio.get_running_loop()
        self.stopping.set()
        deadline = loop.time() + self.policy.shutdown_timeout
        stages = sorted({s.service.stage for s in self._status.values()})
        stuck: list[str] = []
        for i, stage in enumerate(stages):
            members = [s for s in self._status.values() if s.service.stage == stage]
            tasks = {s.task for s in members if s.task is not None and not s.task.done()}
            if not tasks:
                continue
            budget = (deadline - loop.time()) / (len(stages) - i)  # its share of what is left
            stage_end = loop.time() + budget
            graceful = {
                s.task: asyncio.create_task(s.service.stop(), name=f"stop {s.service.name}")
                for s in members
                if s.service.stop is not None and s.task in tasks
            }
            stops = list(graceful.values())
            if graceful:  # until each has ended, or its stop() says it may be cancelled now
                await asyncio.wait(
                    [asyncio.create_task(_either(t, stop)) for t, stop in graceful.items()],
                    timeout=max(0.0, budget * GRACEFUL_SHARE),
                )
            for task in (*tasks, *stops):
                task.cancel()
            _, pending = await asyncio.wait(
                {*tasks, *stops}, timeout=max(0.01, stage_end - loop.time())
            )
            stuck += [t.get_name() for t in pending if t in tasks]
            for stop in stops:  # a failed stop() is logged, not left "never retrieved"
                if stop.done() and not stop.cancelled() and stop.exception() is not None:
                    log.warning("%s: %r", stop.get_name(), stop.exception())
        if stuck:
            log.error(
                "%s ignored cancellation for %.1f s (shutdown_timeout)",
                ", ".join(stuck),
                self.policy.shutdown_timeout,
            )
        return stuck


async def _either(a: asyncio.Task, b: asyncio.Task) -> None:
    await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)


IO_THREADS = "gridread-io"  # the event loop's default executor: database and device calls


def run_process(main: Coroutine[Any, Any, None], *, exit_timeout: float) -> None:
    """`asyncio.run` for the long-running commands, except that a database or device call
    that never returns (its task was cancelled, its thread cannot be) cannot hold the process:
    once `main` is done, the executor's threads get `exit_timeout` seconds, then the process
    exits anyway (code 1, embedded database stopped). asyncio.run would wait for ever."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix=IO_THREADS)
    loop.set_default_executor(executor)
    try:
        loop.run_until_complete(main)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=exit_timeout))
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + exit_timeout
        for thread in threading.enumerate():
            if thread.name.startswith(IO_THREADS):
                thread.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in threading.enumerate() if t.name.startswith(IO_THREADS)]
        if hung or any(not t.done() for t in left):
            log.error("%d database or device call(s) did not return", len(hung) or len(left))
            exit_now(1)
        loop.close()


def exit_now(code: int) -> NoReturn:
    """Leave without waiting for what hangs (a task or thread that ignores cancellation would
    keep the interpreter from exiting); stop the embedded database first."""
    log.error("exiting without waiting for them (code %d)", code)
    try:
        stop_embedded()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
