"""Register maps: decoding vectors, round trips, request planning, and one-line errors."""

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.exceptions import ConfigError
from collectors.modbus.registermap import (
    MAX_REGISTERS_PER_READ,
    TYPES,
    Field,
    RegisterMap,
    load_register_map,
    parse_register_map,
)

# (type, word order, registers on the wire, value). IEEE 754 and two's-complement vectors:
# 0x42F6E979 is 123.456 as float32; 0x449A522B is 1234.5677 (float32 of 1234.5678).
VECTORS = [
    ("float32", "big", [0x42F6, 0xE979], 123.456),
    ("float32", "little", [0xE979, 0x42F6], 123.456),
    ("float32", "big", [0x449A, 0x522B], 1234.5677),
    ("int16", "big", [0xFFFF], -1),
    ("uint16", "big", [0xFFFF], 65535),
    ("int32", "big", [0xFFFF, 0xFFFE], -2),
    ("uint32", "big", [0x0001, 0x0000], 65536),
    ("uint32", "little", [0x0000, 0x0001], 65536),
    ("float64", "big", [0x4059, 0x0000, 0x0000, 0x0000], 100.0),
    ("int64", "big", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
]


@pytest.mark.parametrize(("ftype", "order", "words", "value"), VECTORS)
def test_decode_vectors(ftype, order, words, value):
    f = Field("1.7.0", 0, ftype, word_order=order)
    assert f.decode(words) == pytest.approx(value, rel=1e-7)


def test_scaled_integer_decodes_to_the_meters_decimal():
    # 2316 × 0.1 is 231.60000000000002 in binary floating point; the meter meant 231.6.
    assert Field("32.7.0", 0, "uint16", scale=0.1).decode([2316]) == 231.6
    assert Field("1.8.0", 0, "uint32", scale=0.01).decode([0x0001, 0x86A1]) == 1000.01


@given(
    ftype=st.sampled_from(sorted(TYPES)),
    order=st.sampled_from(["big", "little"]),
    data=st.data(),
)
def test_encode_decode_round_trip(ftype, order, data):
    _fmt, width = TYPES[ftype]
    if ftype.startswith("float"):
        value = data.draw(st.floats(-1e6, 1e6, allow_nan=False, width=32 if width == 2 else 64))
    else:
        bits = width * 16
        lo, hi = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if ftype.startswith("int")
            else (0, 2**bits - 1)
        )
        value = data.draw(st.integers(lo, hi))
    f = Field("1.7.0", 0, ftype, word_order=order)
    words = f.encode(value)
    assert len(words) == width and all(0 <= w <= 0xFFFF for w in words)
    decoded = f.decode(words)
    if ftype == "float32":  # decoded to its shortest decimal: the same float32 on the wire
        assert struct.pack(">f", decoded) == struct.pack(">f", value)
    else:
        assert decoded == value or math.isclose(decoded, value, rel_tol=1e-6)


def test_bundled_map_plans_two_coalesced_reads():
    regmap = load_register_map("three_phase_meter")
    blocks = regmap.plan()
    # 0..9 instantaneous values, a gap of 6 (> max_gap 4), then energy at 16..19
    assert [(b.address, b.count) for b in blocks] == [(0, 10), (16, 4)]
    assert sum(len(b.fields) for b in blocks) == len(regmap.fields) == 11


def test_plan_respects_gap_and_the_125_register_limit():
    fields = tuple(
        Field("1.7.0", a, "uint16") for a in (0, 2, 8, 200, 200 + MAX_REGISTERS_PER_READ)
    )
    plan = RegisterMap("m", 3, fields, max_gap=5).plan()
    assert [(b.address, b.count) for b in plan] == [(0, 9), (200, 1), (325, 1)]
    assert all(b.count <= MAX_REGISTERS_PER_READ for b in plan)


def test_decode_and_encode_agree_for_a_block():
    regmap = load_register_map("three_phase_meter")
    values = {"32.7.0": 231.6, "1.7.0": -3.5, "1.8.0": 123456.78, "13.7.0": -0.95}
    words = regmap.encode(values)
    registers = [words.get(a, 0) for a in range(20)]
    decoded = {}
    for block in regmap.plan():
        decoded.update(regmap.decode(block, registers[block.address : block.address + block.count]))
    for q, v in values.items():
        assert decoded[q] == v


def _map(**field):
    return {
        "function": "holding",
        "field": [{"quantity": "1.8.0", "address": 0, "type": "uint32", **field}],
    }


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"type": "uint17"}, "field 1 (1.8.0): type = 'uint17'; expected one of int16"),
        ({"quantity": "99.9.9"}, "field 1 (99.9.9): unknown quantity '99.9.9'"),
        ({"address": -1}, "address = -1; expected an integer 0–65535"),
        ({"scale": 0}, "scale must not be 0"),
        ({"scael": 0.1}, "unknown key(s) scael"),
        # a float32 at 65535 would need register 65536: every poll would fail with exception 2
        (
            {"address": 65535, "type": "float32"},
            "address = 65535: a float32 spans 2 registers, 65535–65536; the last must be ≤ 65535",
        ),
        ({"decimals": -1}, "decimals = -1; expected an integer 0–15"),
    ],
)
def test_bad_map_is_a_one_line_error_naming_file_and_field(field, message):
    with pytest.raises(ConfigError) as err:
        parse_register_map(_map(**field), source="maps/x.toml", name="x")
    text = str(err.value)
    assert text.startswith("maps/x.toml: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"max_registers": 0}, "max_registers = 0; expected an integer 1–125"),
        ({"max_registers": 126}, "max_registers = 126; expected an integer 1–125"),
        ({"max_gap": True}, "max_gap = True; expected a non-negative integer"),
    ],
)
def test_bad_map_setting_is_a_one_line_error(top, message):
    with pytest.raises(ConfigError) as err:
        parse_register_map({**_map(), **top}, source="maps/x.toml", name="x")
    assert str(err.value) == f"maps/x.toml: {message}"


def test_max_registers_splits_the_plan():
    data = {
        "max_gap": 200,
        "max_registers": 80,
        "field": [
            {"quantity": q, "address": a, "type": "uint32"}
            for q, a in (("32.7.0", 0), ("52.7.0", 60), ("72.7.0", 78), ("1.8.0", 118))
        ],
    }
    regmap = parse_register_map(data, source="m", name="m")
    assert [(b.address, b.count) for b in regmap.plan()] == [(0, 80), (118, 2)]
    assert [
        (b.address, b.count)
        for b in parse_register_map({**data, "max_registers": 125}, source="m", name="m").plan()
    ] == [(0, 120)]


def test_overlapping_fields_are_rejected():
    data = {
        "field": [
            {"quantity": "1.8.0", "address": 0, "type": "uint32"},
            {"quantity": "2.8.0", "address": 1, "type": "uint16"},
        ]
    }
    with pytest.raises(ConfigError, match="register 1 is already used by field 1"):
        parse_register_map(data, source="m.toml", name="m")


def test_missing_map_names_the_bundled_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"register map not found .*three_phase_meter"):
        load_register_map(tmp_path / "nope.toml")


def test_the_last_register_of_a_value_may_be_65535():
    regmap = parse_register_map(_map(address=65534, type="float32"), source="m", name="m")
    assert [(b.address, b.count) for b in regmap.plan()] == [(65534, 2)]


@pytest.mark.parametrize(
    ("words", "value"),
    [
        ([0x4366, 0x3333], 230.2),  # float32 230.2 is 230.1999969482422 as a double
        ([0x3F73, 0x3333], 0.95),
        ([0x4B3C, 0x614E], 12345678.0),
        ([0x3DCC, 0xCCCD], 0.1),
    ],
)
def test_float32_is_rounded_to_its_significant_digits(words, value):
    assert Field("32.7.0", 0, "float32").decode(words) == value


def test_scaled_float32_keeps_the_decimal_value():
    # 230.2 as float32, scaled by 0.001: 0.2302, not 0.2301999969482422
    assert Field("1.7.0", 0, "float32", scale=0.001).decode([0x4366, 0x3333]) == 0.2302


def test_decimals_rounds_any_type():
    regmap = parse_register_map(_map(type="float32", decimals=1), source="m", name="m")
    f = regmap.fields[0]
    assert f.decode([0x4366, 0x3333]) == 230.2
    assert f.decode(Field("1.8.0", 0, "float32").encode(230.26)) == 230.3
    assert regmap.resolution == {"1.8.0": 0.1}
