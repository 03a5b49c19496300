"""The bus collector's gap search goes to its store, not through its sink: the daily reads
must not re-read what they just handed to a sink that stores it only later."""

from collections import Counter
from collections.abc import Sequence

from ingest.model import Quality, Reading
from tests.test_dlt645_bus import Rig


class DeferredSink:
    """A sink that is not the writer: it keeps what it is given and hands it on later, as a
    publisher to an MQTT broker whose ingest workers store it in their own time."""

    def __init__(self) -> None:
        self.held: list[Reading] = []

    async def add_many(self, readings: Sequence[Reading]) -> None:
        self.held.extend(readings)

    async def flush(self) -> None:
        """Everything is handed on (here: held); whether it is stored yet, it cannot know."""

    async def release(self, target) -> None:
        await target.add_many(self.held)
        await target.flush()
        self.held = []


async def test_daily_reads_do_not_re_read_what_they_handed_to_a_deferred_sink(migrated_url):
    async with Rig(migrated_url, 1, reread_days=2) as rig:
        sink = DeferredSink()
        rig.collector.ctx.sink = sink
        await rig.collector.read_daily()
        reads = Counter((r.quantity, r.ts) for r in sink.held)
        assert max(reads.values()) == 1, "read twice: the gap search did not see the sink"
        flags = Counter(
            (r.quantity, Quality(r.quality)) for r in sink.held if r.quantity.startswith("1.8.0")
        )
        # yesterday's 96 points and today's freeze as normal reads; today's 73 points (00:00 …
        # 18:00 local) and the freeze of the day before as re-reads
        assert flags == {
            ("1.8.0", Quality.GOOD): 96,
            ("1.8.0", Quality.RE_READ): 73,
            ("1.8.0*d", Quality.GOOD): 1,
            ("1.8.0*d", Quality.RE_READ): 1,
        }
        # once the sink has delivered, the store has it all: nothing is missing
        await sink.release(rig.writer)
        again = await rig.collector.reread(rig.refs[0], days=2)
        assert again["frozen_missing"] == 0 and again["curve_missing"] == 0
