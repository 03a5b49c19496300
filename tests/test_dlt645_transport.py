"""The serial-over-TCP transport discards what the line holds before a request, as the serial
one does: a late reply to an earlier request must not be read as the answer to the next."""

import asyncio

from collectors.dlt645 import codec
from collectors.dlt645.transport import TcpTransport

LATE = codec.reply(
    codec.read_request("202107070001", 0x00010000), b"\x00\x00\x01\x00" + b"\x00" * 4
)


async def test_tcp_transport_discards_a_late_reply_before_the_next_request():
    sent = asyncio.Event()

    async def converter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(LATE.to_bytes())  # the meter's late answer, arriving between requests
        await writer.drain()
        sent.set()
        await reader.read()  # keep the connection open until the client closes it
        writer.close()

    server = await asyncio.start_server(converter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = TcpTransport("127.0.0.1", port)
    try:
        await transport.open()
        await sent.wait()
        deadline = asyncio.get_running_loop().time() + 5
        while transport.buffered() == 0:  # the late bytes are in, unread
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        transport.discard_input()
        assert await transport.read(0.2) == b""
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
