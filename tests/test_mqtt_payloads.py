"""MQTT payload formats: what is accepted, what is refused and why."""

from datetime import UTC, datetime

import pytest

from collectors.mqtt.payloads import PayloadError, parse

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)


def test_compact_values_and_triples():
    p = parse(
        "gridread/v1/m1/readings",
        b'{"ts": "2026-11-26T10:15:00Z", "values": {"1.8.0": 12.5, "32.7.0": 231},'
        b' "readings": [["1.8.0", 1795688100, 12.75]], "quality": 8}',
        now=NOW,
    )
    assert p.device == "m1" and p.quality == 8 and p.rejected == []
    assert p.readings == [("1.8.0", T, 12.5), ("32.7.0", T, 231.0), ("1.8.0", T, 12.75)]


def test_senml_with_base_name_and_time():
    p = parse(
        "gridread/v1/m1/senml",
        b'[{"bn": "m1/", "bt": 1795688100, "n": "1.8.0", "u": "kWh", "v": 12.5},'
        b' {"n": "32.7.0", "u": "V", "v": 231.2, "t": 60}, {"n": "31.7.0", "u": "V", "v": 5}]',
        now=NOW,
    )
    assert p.readings[:2] == [
        ("1.8.0", T, 12.5),
        ("32.7.0", datetime(2026, 11, 26, 10, 16, tzinfo=UTC), 231.2),
    ]
    assert p.rejected == ["31.7.0: unit 'V', expected 'A'"]


def test_readable_but_wrong_readings_are_rejected_with_reasons():
    p = parse(
        "gridread/v1/m1/readings",
        b'{"readings": [["9.9.9", "2026-11-26T10:15:00Z", 1], ["1.8.0", "2026-11-27T10:15:00Z", 2],'
        b' ["1.8.0", "2026-11-26T10:15:00+08:00", 3]]}',
        now=NOW,
    )
    assert p.readings == [("1.8.0", datetime(2026, 11, 26, 2, 15, tzinfo=UTC), 3.0)]
    assert p.rejected[0] == "unknown quantity '9.9.9'"
    assert "in the future" in p.rejected[1]


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        ("gridread/v1/m1/readings", b"\xff\xfe", "not JSON"),
        ("gridread/v1/m1/readings", b"{not json", "not JSON"),
        ("gridread/v1/m1/readings", b"[]", "must be a JSON object"),
        ("gridread/v1/m1/readings", b'{"values": {"1.8.0": 1}}', "'values' needs a 'ts'"),
        ("gridread/v1/m1/readings", b'{"value": 1}', "unknown key(s) 'value'"),
        (
            "gridread/v1/m1/senml",
            b'[{"bn": "m2/", "bt": 1, "n": "1.8.0", "v": 1}]',
            "not for device 'm1'",
        ),
        ("gridread/v1/m1/xml", b"{}", "unknown payload format"),
        ("gridread/m1/readings", b"{}", "not under gridread/v1/"),
        ("gridread/v1/readings", b"{}", "expected gridread/v1/<device>/<format>"),
    ],
)
def test_unreadable_payloads_raise_with_the_reason(topic, payload, message):
    with pytest.raises(PayloadError) as err:
        parse(topic, payload, now=NOW)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        (
            "gridread/v1/m1/readings",
            b'{"ts": "2026-11-26T10:15:00", "values": {"1.8.0": 1}}',
            "no time zone",
        ),
        (
            "gridread/v1/m1/readings",
            b'{"ts": 1795688100, "values": {"1.8.0": "12"}}',
            "not a finite number",
        ),
        (
            "gridread/v1/m1/readings",
            b'{"readings": [["1.8.0", 1795688100]]}',
            "expected [quantity, time, value]",
        ),
        ("gridread/v1/m1/senml", b'[{"n": "1.8.0", "v": 1}]', "no time"),
        ("gridread/v1/m1/readings", b'{"ts": 1, "values": {"1.8.0": 1e400}}', "not a finite"),
        (
            "gridread/v1/m1/readings",
            b'{"ts": 1, "values": {"1.8.0": ' + b"9" * 400 + b"}}",
            "not a finite number",
        ),
        (
            "gridread/v1/m1/readings",
            b'{"ts": "0001-01-01T00:00:00+01:00", "values": {"1.8.0": 1}}',
            "not an RFC 3339 time",
        ),
    ],
)
def test_one_bad_reading_is_rejected_with_the_reason(topic, payload, message):
    p = parse(topic, payload, now=NOW)
    assert p.readings == [] and len(p.rejected) == 1 and message in p.rejected[0]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b'{"ts": 1, "values": {"1.8.0": ' + b"9" * 5000 + b"}}", "not JSON that can be read"),
    ],
)
def test_json_the_parser_cannot_hold_is_unreadable(payload, message):
    with pytest.raises(PayloadError, match=message):
        parse("gridread/v1/m1/readings", payload, now=NOW)
