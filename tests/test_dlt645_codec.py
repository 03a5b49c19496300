"""DL/T 645-2007 codec: published frames, round trips, the frame buffer, and a fuzzer."""

from datetime import date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.dlt645 import codec
from collectors.dlt645.codec import (
    BadFrame,
    ErrorBits,
    Frame,
    FrameBuffer,
    Function,
    RelayAction,
    decode,
)
from collectors.dlt645.dataids import FieldFormat, lookup, nth, table
from collectors.exceptions import FrameError

# Frames as published in public DL/T 645-2007 material (hex as printed there).
VECTORS = [
    # read address, wildcard (the issue text)
    ("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16", "AAAAAAAAAAAA", 0x13, "", None),
    # meter 202107072529 answers DI 00000000 with 317.76 kWh (the issue text)
    (
        "FE FE FE FE 68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16",
        "202107072529",
        0x91,
        "00000000",
        Decimal("317.76"),
    ),
    # read DI 00010000 (forward active total) from meter 000000000001
    ("68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16", "000000000001", 0x11, "00010000", None),
    # the same read to the wildcard address, with preamble
    (
        "FE FE FE FE 68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16",
        "AAAAAAAAAAAA",
        0x11,
        "00010000",
        None,
    ),
    # meter 000000000161 answers 00010000 with 000000.26 kWh
    (
        "68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16",
        "000000000161",
        0x91,
        "00010000",
        Decimal("0.26"),
    ),
    # meter 123456789012 answers 00010000 with 1234.56 kWh
    (
        "FE FE 68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16",
        "123456789012",
        0x91,
        "00010000",
        Decimal("1234.56"),
    ),
    ("68 37 03 00 92 81 39 68 11 04 33 33 34 33 38 16", "398192000337", 0x11, "00010000", None),
]


@pytest.mark.parametrize(("hexframe", "address", "control", "di", "value"), VECTORS)
def test_published_frames(hexframe, address, control, di, value):
    raw = bytes.fromhex(hexframe)
    frame = Frame.from_bytes(raw)
    assert (frame.address, frame.control) == (address, control)
    if di:
        assert frame.data[:4] == bytes.fromhex(di)[::-1]
    if value is not None:
        [(_, got)] = lookup(int(di, 16)).decode(frame.data[4:])
        assert got == value
    preamble = raw[: raw.index(0x68)]
    assert frame.to_bytes(preamble=preamble) == raw  # and back, byte for byte


def test_requests_encode_as_published():
    assert codec.read_address_request().to_bytes().hex(" ").upper() == (
        "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"
    )
    req = codec.read_request("000000000001", 0x00010000)
    assert (
        req.to_bytes(preamble=b"").hex(" ").upper()
        == "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16"
    )


def test_control_bits_and_error_replies():
    req = codec.read_request("202107072529", 0x04000101)
    err = codec.error_reply(req, ErrorBits.NO_DATA)
    assert err.control == 0xD1 and err.is_reply and err.is_error and err.error is ErrorBits.NO_DATA
    back = Frame.from_bytes(err.to_bytes())
    assert back.error is ErrorBits.NO_DATA and back.function == Function.READ
    ok = codec.reply(req, b"\x01\x01\x00\x04" + b"\x00" * 4, follows=True)
    assert ok.control == 0xB1 and ok.has_followup and ok.error is None
    relay_err = codec.error_reply(
        codec.relay_control_request(
            "202107072529",
            password="02123456",
            operator="00000001",
            action=RelayAction.DISCONNECT,
            valid_until=datetime(2026, 12, 1),
        ),
        ErrorBits.UNAUTHORISED,
    )
    assert relay_err.control == 0xDC and "UNAUTHORISED" in repr(relay_err.error)


@pytest.mark.parametrize(
    "frame",
    [
        codec.read_request("202107072529", 0x0001FF00),
        codec.read_request(
            "202107072529", 0x06040001, blocks=4, start=datetime(2026, 11, 25, 10, 15)
        ),
        codec.read_followup_request("202107072529", 0x06040001, 2),
        codec.read_address_request(),
        codec.broadcast_time_request(datetime(2026, 11, 26, 14, 30, 5)),
        codec.freeze_request("202107072529"),
        codec.change_baud_request("202107072529", 9600),
        codec.relay_control_request(
            "202107072529",
            password="02123456",
            operator="00000001",
            action=RelayAction.CONNECT_ALLOWED,
            valid_until=datetime(2026, 12, 1, 8),
        ),
        codec.write_request(
            "202107072529",
            0x04000102,
            password="02123456",
            operator="00000001",
            value=bytes.fromhex("053014"),
        ),
        codec.reply(
            codec.read_address_request(), bytes.fromhex("292507072120"), address="202107072529"
        ),
    ],
    ids=lambda f: f"{f.control:02X}",
)
def test_every_control_code_round_trips(frame):
    raw = frame.to_bytes()
    assert Frame.from_bytes(raw) == frame
    assert raw[-1] == 0x16 and raw[-2] == sum(raw[4:-2]) & 0xFF


def test_broadcast_time_and_load_record_request_layout():
    f = codec.broadcast_time_request(datetime(2026, 11, 26, 14, 30, 5))
    assert f.address == "999999999999" and f.data == bytes.fromhex("053014261126")  # ssmmhhDDMMYY
    r = codec.read_request(
        "000000000001", 0x06040001, blocks=4, start=datetime(2026, 11, 25, 10, 15)
    )
    assert r.data == bytes.fromhex("01000406041510251126")  # DI, N, mmhhDDMMYY


FORMAT_CASES = [
    ("XXXXXX.XX", Decimal("317.76"), "76170300"),
    ("XXX.X", Decimal("220.1"), "0122"),
    ("-XXX.XXX", Decimal("-1.5"), "001580"),  # 001.500 low byte first, sign in the top bit
    ("-XX.XXXX", Decimal("12.3456"), "563412"),
    ("-X.XXX", Decimal("-0.95"), "5089"),
    ("XX.XX", Decimal("49.98"), "9849"),
    ("XXXXXX", Decimal("42"), "420000"),
    ("YYMMDDWW", date(2026, 11, 26), "04261126"),  # a Thursday: WW = 04
    ("hhmmss", time(14, 30, 5), "053014"),
    ("YYMMDDhhmm", datetime(2026, 11, 26, 0, 0), "0000261126"),
    ("YYMMDDhhmmss", datetime(2026, 11, 26, 23, 59, 58), "585923261126"),
]


@pytest.mark.parametrize(("fmt", "value", "wire"), FORMAT_CASES)
def test_field_formats(fmt, value, wire):
    f = FieldFormat.parse(fmt)
    assert f.encode(value).hex() == wire
    assert f.decode(bytes.fromhex(wire)) == value


def test_every_di_in_the_table_round_trips():
    sample = {
        "YYMMDDWW": date(2026, 1, 2),
        "hhmmss": time(1, 2, 3),
        "YYMMDDhhmm": datetime(2026, 1, 2, 3, 4),
        "YYMMDDhhmmss": datetime(2026, 1, 2, 3, 4, 5),
    }
    for key, entry in table().items():
        values = [sample.get(f.text, Decimal(1).scaleb(-f.decimals) * 7) for f, _ in entry.fields]
        decoded = [v for _, v in entry.decode(entry.encode(values))]
        assert decoded == values, key


def test_nn_entries_resolve():
    assert nth("050601NN", 3) == 0x05060103
    assert lookup(0x05060103).fields == table()["050601NN"].fields
    with pytest.raises(KeyError):
        lookup(0x05060140)  # 0x40 is past the 62 days the standard keeps
    with pytest.raises(FrameError, match="expected 4 bytes"):
        FieldFormat.parse("XXXXXX.XX").decode(b"\x00\x00")
    with pytest.raises(FrameError, match="not BCD"):
        FieldFormat.parse("XXX.X").decode(b"\x0a\x00")


def test_frame_buffer_skips_garbage_and_waits_for_partial_frames():
    good = codec.read_request("202107072529", 0x00010000).to_bytes()
    second = codec.read_address_request().to_bytes()
    buf = FrameBuffer()
    buf.feed(b"\x00\x68\x12garbage" + good[:7])
    assert list(buf.frames()) == []  # partial: waits
    buf.feed(good[7:] + second[:3])
    frames = list(buf.frames())
    assert [f.address for f in frames] == ["202107072529"]
    buf.feed(second[3:])
    assert [f.function for f in buf.frames()] == [Function.READ_ADDRESS]
    assert len(buf) == 0 and buf.skipped >= 9


def test_bad_checksum_and_end_byte_are_typed_errors_naming_both_values():
    raw = bytearray(codec.read_request("202107072529", 0x00010000).to_bytes(preamble=b""))
    raw[-2] ^= 0xFF
    with pytest.raises(BadFrame, match=r"checksum: expected [0-9A-F]{2}, got [0-9A-F]{2} in 68 29"):
        decode(raw)
    raw[-2] ^= 0xFF
    raw[-1] = 0x17
    with pytest.raises(BadFrame, match="end byte: expected 16, got 17"):
        decode(raw)
    buf = FrameBuffer()
    good = codec.read_address_request().to_bytes()
    buf.feed(bytes(raw) + good)
    out = list(buf.frames())
    assert isinstance(out[0], FrameError) and out[-1] == codec.read_address_request()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_fuzz_decoder_yields_frames_or_typed_errors(data, cuts):
    """Any bytes, fed in any pieces: frames or FrameErrors, never another exception or a hang."""
    buf = FrameBuffer(limit=512)
    pos = 0
    for n in [*cuts, len(data)]:
        buf.feed(data[pos : pos + n])
        pos += n
        for item in buf.frames():
            assert isinstance(item, Frame | FrameError)
    assert len(buf) <= 512


@settings(max_examples=200, deadline=None)
@given(
    st.text("0123456789", min_size=12, max_size=12),
    st.integers(0, 255),
    st.binary(max_size=200),
    st.binary(max_size=20),
)
def test_fuzz_round_trip_inside_noise(address, control, data, noise):
    frame = Frame(address, control, data)
    buf = FrameBuffer()
    buf.feed(noise.replace(b"\x68", b"\x00") + frame.to_bytes())
    assert [f for f in buf.frames() if isinstance(f, Frame)] == [frame]
