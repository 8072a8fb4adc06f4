"""rtpengine's ng protocol, sans-IO: bencode and the cookie framing (recorder.media.ng)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.media.ng import (
    BencodeError,
    NgError,
    bdecode,
    bencode,
    decode_reply,
    encode_request,
)

# What decoding gives back: bytes strings, ints, lists, dicts with str keys.
decoded_values = st.recursive(
    st.binary(max_size=40) | st.integers(min_value=-(10**20), max_value=10**20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def test_known_encodings() -> None:
    assert bencode(42) == b"i42e"
    assert bencode(-3) == b"i-3e"
    assert bencode(0) == b"i0e"
    assert bencode("spam") == b"4:spam"
    assert bencode(b"") == b"0:"
    assert bencode(["a", 1]) == b"l1:ai1ee"
    # Keys sorted by their bytes, whatever the order given.
    assert bencode({"z": 1, "command": "ping", "a": [b"x"]}) == (b"d1:al1:xe7:command4:ping1:zi1ee")
    # UTF-8 strings count bytes, not characters.
    assert bencode("é") == b"2:\xc3\xa9"


def test_offer_as_rtpengine_documents_it() -> None:
    command = {"command": "offer", "call-id": "abc", "from-tag": "a", "sdp": b"v=0\r\n"}
    assert bdecode(bencode(command)) == {
        "command": b"offer",
        "call-id": b"abc",
        "from-tag": b"a",
        "sdp": b"v=0\r\n",
    }


@given(decoded_values)
def test_round_trip(value: Any) -> None:
    assert bdecode(bencode(value)) == value


@given(st.binary(max_size=200))
def test_garbage_raises_only_bencode_errors(data: bytes) -> None:
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bdecode(bencode(value)) == value  # what decodes, re-encodes


@pytest.mark.parametrize(
    "data",
    [b"", b"i12", b"i-0e", b"i03e", b"ie", b"5:abc", b"03:abc", b"l", b"d1:a", b"di1ei2ee", b"x"],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(data)


def test_trailing_bytes_and_depth_are_refused() -> None:
    with pytest.raises(BencodeError, match="after the value"):
        bdecode(b"i1ei2e")
    with pytest.raises(BencodeError, match="deep"):
        bdecode(b"l" * 100 + b"e" * 100)


@pytest.mark.parametrize("value", [True, 1.5, None, {1: "x"}, object()])
def test_unencodable_values(value: Any) -> None:
    with pytest.raises(BencodeError):
        bencode(value)


def test_request_framing() -> None:
    assert encode_request("c00k1e", {"command": "ping"}) == b"c00k1e d7:command4:pinge"
    with pytest.raises(ValueError):
        encode_request("two words", {"command": "ping"})
    with pytest.raises(ValueError):
        encode_request("cookie", {"call-id": "x"})


def test_replies() -> None:
    pong = decode_reply(b"c1 d6:result4:ponge")
    assert pong.cookie == "c1" and pong.ok and pong.error is None
    ok = decode_reply(b"c2 d6:result2:ok3:sdp3:v=0e")
    assert ok.checked()["sdp"] == b"v=0" and ok.text("sdp") == "v=0"
    error = decode_reply(b"c3 d6:result5:error12:error-reason15:Unknown call-IDe")
    assert not error.ok and error.error == "Unknown call-ID"
    with pytest.raises(NgError, match="Unknown call-ID"):
        error.checked()
    for bad in (b"nocookie", b" d6:result2:oke", b"c4 l2:oke", b"c5 d6:result2:ok"):
        with pytest.raises(BencodeError):
            decode_reply(bad)
