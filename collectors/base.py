"""The small interfaces collectors are built on (after Telegraf's Input / ServiceInput).

A *polled* collector reads one device when asked (`gather`); the scheduler decides when,
enforces the timeout, retries and counts failures. A *push* source (MQTT) is
started once and hands readings to the sink as they arrive (collectors/mqtt/worker.py
has `run()`, cancelled to stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ingest.model import Reading


class ReadingSink(Protocol):
    """Where collectors hand their readings: the writer, or an MQTT publisher when scaled out."""

    async def add_many(self, readings: Sequence[Reading]) -> None: ...

    async def flush(self) -> None:
        """Return when everything added so far is handed on: stored (or dead-lettered) by
        the writer, only published by a sink that is not the writer. A collector that needs
        to know what is stored asks its store, not the sink."""
        ...


@runtime_checkable
class PolledCollector(Protocol):
    device_id: int
    device_name: str
    protocol: str

    async def gather(self, sink: ReadingSink) -> int:
        """Read the device once, hand the readings to `sink`, return how many.

        Raises a `collectors.exceptions.DeviceError` when the device cannot be read."""
        ...

    async def close(self) -> None: ...
