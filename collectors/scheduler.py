"""The poll scheduler: when to read which device, and what to do when a read fails.

Each device gets its own task. Polls are due on a fixed grid (start + k × interval, the start
offset by a random jitter so that a thousand meters on one interval do not all fire in the
same millisecond); a poll that overruns skips the slots it missed instead of bursting to catch
up. Each attempt has a timeout; failed attempts are retried with capped backoff; a device that
still fails is counted and logged, and the scheduler moves on. One failing device never stops
the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from collectors import metrics
from collectors.base import PolledCollector, ReadingSink
from collectors.exceptions import DeviceError, DeviceTimeout
from ingest.retry import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollPolicy:
    timeout: float = 3.0  # one attempt at reading one device, all its blocks
    retries: int = 2  # further attempts after the first fails
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.2, maximum=5.0))
    jitter: float = 0.5  # start offset, as a fraction of the interval


@dataclass
class _Scheduled:
    collector: PolledCollector
    interval: float


class PollScheduler:
    def __init__(self, sink: ReadingSink, policy: PollPolicy | None = None) -> None:
        self.sink = sink
        self.policy = policy or PollPolicy()
        self._devices: list[_Scheduled] = []
        self._failing: dict[str, int] = {}  # device name → consecutive failed polls

    def add(self, collector: PolledCollector, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"{collector.device_name}: poll interval must be positive")
        self._devices.append(_Scheduled(collector, interval))

    @property
    def collectors(self) -> list[PolledCollector]:
        return [s.collector for s in self._devices]

    async def poll(self, collector: PolledCollector) -> bool:
        """Poll one device now, with the policy's timeout and retries. True on success."""
        protocol = collector.protocol
        delays = self.policy.backoff.delays()
        attempts = self.policy.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.policy.timeout):
                    count = await collector.gather(self.sink)
            except (DeviceError, TimeoutError) as exc:
                err = (
                    exc
                    if isinstance(exc, DeviceError)
                    else DeviceTimeout(f"no complete reply within {self.policy.timeout:g} s")
                )
                metrics.POLL_ERRORS.labels(protocol, err.kind).inc()
                log.debug(
                    "poll %s attempt %d/%d: %s: %s",
                    collector.device_name,
                    attempt,
                    attempts,
                    err.kind,
                    err,
                )
                if attempt == attempts or not err.retryable:
                    self._failed(collector, err)
                    return False
                await asyncio.sleep(next(delays))
                continue
            metrics.POLL_SECONDS.labels(protocol).observe(time.perf_counter() - started)
            metrics.READINGS_COLLECTED.labels(protocol).inc(count)
            metrics.POLLS.labels(protocol, "ok").inc()
            if failures := self._failing.pop(collector.device_name, 0):
                log.info("%s recovered after %d failed poll(s)", collector.device_name, failures)
            return True
        raise AssertionError("unreachable")

    def _failed(self, collector: PolledCollector, err: DeviceError) -> None:
        """Count the failed poll; log the first of a run of failures as a warning, the rest
        at debug level (the metrics count every one)."""
        metrics.POLLS.labels(collector.protocol, "failed").inc()
        name = collector.device_name
        self._failing[name] = self._failing.get(name, 0) + 1
        level = logging.WARNING if self._failing[name] == 1 else logging.DEBUG
        log.log(level, "poll %s failed (%s): %s", name, err.kind, err)

    async def run(self) -> None:
        """Poll every device on its interval until cancelled; then close the collectors."""
        try:
            async with asyncio.TaskGroup() as tg:
                for scheduled in self._devices:
                    tg.create_task(self._loop(scheduled), name=scheduled.collector.device_name)
        finally:
            for scheduled in self._devices:
                await scheduled.collector.close()

    async def _loop(self, scheduled: _Scheduled) -> None:
        interval = scheduled.interval
        loop = asyncio.get_running_loop()
        next_due = loop.time() + random.uniform(0, interval * self.policy.jitter)
        while True:
            await asyncio.sleep(max(0.0, next_due - loop.time()))
            try:
                await self.poll(scheduled.collector)
            except Exception:  # a bug in one collector must not take down the others
                metrics.POLL_ERRORS.labels(scheduled.collector.protocol, "internal").inc()
                log.exception("poll %s crashed", scheduled.collector.device_name)
            _raise_if_cancel_was_swallowed()
            now = loop.time()
            next_due += interval
            if next_due < now:  # overran: skip the missed slots
                next_due += ((now - next_due) // interval + 1) * interval


def _raise_if_cancel_was_swallowed() -> None:
    """A library may lose a cancel: on Python 3.11 `asyncio.wait_for` (pymodbus awaits every
    reply with it) returns the result when the cancel arrives in the loop turn the result
    does, and the poll ends as if never cancelled. The task still counts the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
