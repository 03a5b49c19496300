"""Commands on the bus: discovery of the meters by abbreviated addressing, relay control."""

from __future__ import annotations

from datetime import timedelta

from collectors.dlt645 import codec
from collectors.dlt645.codec import RelayAction
from collectors.dlt645.context import BusContext, MeterRef
from collectors.exceptions import DeviceError, DeviceRejected, FrameError
from ingest.model import Event


class CommandsJob:
    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx

    async def discover(self) -> list[str]:
        """Find the meters on the bus by abbreviated addressing: ask AA…AAxx for each last
        byte xx; where several meters answer at once (a garbled reply), narrow down by the
        next byte. Returns the addresses found."""
        bus = self.ctx.bus
        found: list[str] = []

        async def search(known_low: str) -> None:  # low bytes fixed so far, e.g. "01" or "2901"
            for b in range(100):
                low = f"{b:02d}" + known_low
                pattern = "AA" * (6 - len(low) // 2) + low
                try:
                    reply = await bus.exchange(codec.Frame(pattern, codec.Function.READ_ADDRESS))
                except FrameError:
                    if len(low) < 12:
                        await search(low)  # a collision: tell them apart by the next byte
                    continue
                except DeviceError:
                    continue
                if reply is not None and reply.address not in found:
                    found.append(reply.address)

        await search("")
        return found

    async def relay(
        self,
        meter: MeterRef,
        action: RelayAction,
        *,
        password: str,
        operator: str,
        valid_for: timedelta = timedelta(minutes=10),
    ) -> codec.Frame:
        """Operate the meter's relay; returns its reply (a normal 9C frame). DeviceRejected if
        the meter refuses (wrong password)."""
        ctx = self.ctx
        reply = await ctx.bus.exchange(
            codec.relay_control_request(
                meter.address,
                password=password,
                operator=operator,
                action=action,
                valid_until=ctx.now_local() + valid_for,
            )
        )
        assert reply is not None
        if reply.is_error:
            raise DeviceRejected(
                f"meter {meter.address} refused relay {action.name}: {reply.error!r}",
                code=int(reply.error or 0),
                retryable=False,
            )
        await ctx.store.add_events(
            [
                Event(
                    meter.device_id,
                    ctx.now_utc(),
                    "relay_operated",
                    {"action": action.name, "operator": operator},
                )
            ]
        )
        return reply

    async def relay_state(self, meter: MeterRef) -> tuple[codec.Status3, codec.Frame]:
        """Status word 3 (04000503) and the reply it came in: bit 4 says whether the relay is
        open. DeviceRejected if the meter does not have the item."""
        reply = await self.ctx.bus.exchange(codec.read_request(meter.address, codec.STATUS_WORD_3))
        assert reply is not None
        if reply.is_error:
            raise DeviceRejected(
                f"meter {meter.address} refused status word 3 (04000503): {reply.error!r}",
                code=int(reply.error or 0),
                retryable=False,
            )
        return codec.parse_status_word(reply), reply
