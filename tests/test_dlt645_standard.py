"""DL/T 645-2007 codec against the standard's layouts and published frames (issue 7 §4)."""

from datetime import datetime
from decimal import Decimal

from collectors.dlt645 import codec
from collectors.dlt645.codec import Frame, RelayAction
from collectors.dlt645.dataids import lookup

# A relay-control (1C) "disconnect" frame as published in the comment of
# com.holley.emcpshare.dcs.util.ProtocolMeter645_2007Util.packDisconnect (Holley EMCP, public
# GitHub: "645拉闸报文例子"): meter 111111111111, PA and password 0, operator 0, N1 = 1A,
# N2 = 00, valid until 2018-05-12 15:41:24. The same method builds the data field as
# N8..N3 N2 N1 C3..C0 P2P1P0 PA and then reverses it, i.e. on the wire PA P0 P1 P2 C0..C3 N1 N2
# N3..N8: the privilege byte first, then the password low byte first.
PUBLISHED_1C = "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16"


def test_relay_control_frame_as_published():
    frame = codec.relay_control_request(
        "111111111111",
        password="00000000",
        operator="00000000",
        action=RelayAction.DISCONNECT,
        valid_until=datetime(2018, 5, 12, 15, 41, 24),
    )
    assert frame.to_bytes(preamble=b"").hex(" ").upper() == PUBLISHED_1C
    assert Frame.from_bytes(bytes.fromhex(PUBLISHED_1C)) == frame


# Two relay-control frames captured from a concentrator's transparent forwarding (AFN 10 F1)
# and published in the comments of a public Node.js head end: meter 151230011061, password
# "02020637" on the wire as 35 6A 39 35 (−33H: 02 37 06 02, i.e. PA P0 P1 P2), operator
# 00000001, N1 = 1A (断电, disconnect) / 1B (通电, connect allowed), N2 = 00, valid until
# 2099-12-30 00:00:00. These fix the password's byte order with a non-zero password.
CAPTURED_1C = {
    RelayAction.DISCONNECT: "68 61 10 01 30 12 15 68 1C 10 35 6A 39 35 34 33 33 33"
    " 4D 33 33 33 33 63 45 CC 2C 16",
    RelayAction.CONNECT_ALLOWED: "68 61 10 01 30 12 15 68 1C 10 35 6A 39 35 34 33 33 33"
    " 4E 33 33 33 33 63 45 CC 2D 16",
}


def test_relay_control_frames_with_a_password_as_captured():
    for action, published in CAPTURED_1C.items():
        frame = codec.relay_control_request(
            "151230011061",
            password="02020637",
            operator="00000001",
            action=action,
            valid_until=datetime(2099, 12, 30),
        )
        assert frame.to_bytes(preamble=b"").hex(" ").upper() == published
        assert Frame.from_bytes(bytes.fromhex(published)) == frame


def test_password_is_privilege_byte_first_then_low_byte_first():
    # "02020637": privilege level 02, password 020637 → PA P0 P1 P2 = 02 37 06 02
    relay = codec.relay_control_request(
        "202107072529",
        password="02020637",
        operator="12345678",
        action=RelayAction.DISCONNECT,
        valid_until=datetime(2026, 12, 1),
    )
    assert relay.data[:4] == bytes.fromhex("02370602")  # at the start of a relay command
    assert relay.data[4:8] == bytes.fromhex("78563412")  # operator C0..C3, low byte first
    write = codec.write_request(
        "202107072529", 0x04000102, password="02020637", operator="12345678", value=b"\x01"
    )
    assert write.data[:4] == bytes.fromhex("02010004")  # the DI, DI0 first
    assert write.data[4:8] == bytes.fromhex("02370602")  # after the DI in a write
    assert codec.parse_password(relay.data[:4]) == "02020637"


def test_block_reply_with_unavailable_items_keeps_the_rest():
    # a single-phase meter answers the voltage block with Ub, Uc as FF FF ("not available")
    values = lookup(0x0201FF00).decode(bytes.fromhex("0122FFFFFFFF"))
    assert values == [("32.7.0", Decimal("220.1")), ("52.7.0", None), ("72.7.0", None)]
    assert lookup(0x0201FF00).encode([Decimal("220.1"), None, None]) == bytes.fromhex(
        "0122FFFFFFFF"
    )


def test_combined_energy_carries_a_sign_in_the_top_byte():
    wire = bytes.fromhex("34120080")  # 0000.12.34 low byte first, top bit set: −12.34
    for di in (0x00000000, 0x00030000, 0x00040000):
        [(_, value)] = lookup(di).decode(wire)
        assert value == Decimal("-12.34"), f"{di:08X}"
    [(_, forward)] = lookup(0x00010000).decode(bytes.fromhex("34120000"))
    assert forward == Decimal("12.34")
