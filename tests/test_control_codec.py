"""Status word 3 (04000503): the relay state read back after a relay command.

The two exchanges below are published: a DL/T 645-2007 meter (address 151230011061) read
through a concentrator's transparent forwarding (DL/T 698/376.1 AFN 10 F1), captured in a
public head end's source (GitHub, a Node.js 376.1 handler, comments "通电状态查询(断开)" and
"通电状态查询(通电)"; found with the code search of this project's library, id 17039352107).
"""

import pytest

from collectors.dlt645 import codec
from collectors.dlt645.codec import Frame, Status3
from collectors.exceptions import FrameError

REQUEST = "68 61 10 01 30 12 15 68 11 04 36 38 33 37 86 16"
REPLY_OPEN = "68 61 10 01 30 12 15 68 91 06 36 38 33 37 83 33 BE 16"  # 断开
REPLY_CLOSED = "68 61 10 01 30 12 15 68 91 06 36 38 33 37 33 33 6E 16"  # 通电


def test_the_status_word_3_request_is_the_published_frame():
    # DI 04000503 travels DI0 first, each byte +33: 03 05 00 04 → 36 38 33 37;
    # CS = 68+61+10+01+30+12+15+68+11+04+36+38+33+37 = 0x386 → 86
    frame = codec.read_request("151230011061", codec.STATUS_WORD_3)
    assert frame.to_bytes(preamble=b"") == bytes.fromhex(REQUEST)


def test_the_published_replies_say_open_and_closed():
    # 83 33 − 33 each → 50 00: the word 0x0050 = bit 4 (relay open) + bit 6 (commanded open)
    open_ = codec.parse_status_word(Frame.from_bytes(bytes.fromhex(REPLY_OPEN)))
    assert open_ == Status3.RELAY_OPEN | Status3.RELAY_COMMANDED_OPEN
    assert Status3.RELAY_OPEN in open_
    # 33 33 → 00 00: relay closed, last command "close"
    closed = codec.parse_status_word(Frame.from_bytes(bytes.fromhex(REPLY_CLOSED)))
    assert closed == 0 and Status3.RELAY_OPEN not in closed


def test_a_reply_to_another_di_is_a_frame_error():
    other = codec.reply(codec.read_request("151230011061", 0x00010000), b"\x00\x00\x01\x00\x26")
    with pytest.raises(FrameError, match="expected DI 04000503"):
        codec.parse_status_word(other)
