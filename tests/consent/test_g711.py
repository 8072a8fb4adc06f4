from __future__ import annotations

import warnings

import numpy as np
import pytest

from consent.g711 import (
    ALAW_DECODE,
    ULAW_DECODE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def test_ulaw_known_values() -> None:
    # G.711 Table 2a: 0x00 / 0x80 are the extremes, 0x7F and 0xFF are the two zeros.
    assert ULAW_DECODE[[0x00, 0x80, 0x7F, 0xFF, 0x7E, 0xFE]].tolist() == [
        -32124,
        32124,
        0,
        0,
        -8,
        8,
    ]
    assert ulaw_encode(np.array([0, 32767, -32768, 8, -8], dtype=np.int16)).tolist() == [
        0xFF,
        0x80,
        0x00,
        0xFE,
        0x7E,
    ]


def test_alaw_known_values() -> None:
    # A-law has no zero code: 0xD5 / 0x55 are +-8 (the even bits are inverted, 0x55).
    assert ALAW_DECODE[[0xD5, 0x55, 0xAA, 0x2A]].tolist() == [8, -8, 32256, -32256]
    assert alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)).tolist() == [
        0xD5,
        0x55,
        0xAA,
        0x2A,
    ]


def test_decode_then_encode_is_identity_except_negative_zero() -> None:
    assert (alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES).all()
    back = ulaw_encode(ulaw_decode(ALL_CODES))
    differs = np.flatnonzero(back != ALL_CODES).tolist()
    assert differs == [0x7F]  # -0 decodes to 0, which encodes as +0 (0xFF)
    assert back[0x7F] == 0xFF


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_quantisation_error_is_half_a_step(codec: str) -> None:
    enc, dec = (ulaw_encode, ulaw_decode) if codec == "PCMU" else (alaw_encode, alaw_decode)
    x = ALL_INT16.astype(np.int64)
    error = np.abs(dec(enc(ALL_INT16)).astype(np.int64) - x)
    # Segments double in size and step together: half a step is ~3 % of the value,
    # plus the first segment's absolute step, plus clipping above the top level.
    top = 32124 if codec == "PCMU" else 32256
    bound = np.maximum(0.032 * np.abs(x) + 8, np.abs(x) - top)
    assert (error <= bound).all()


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_decoded_levels_are_monotonic(codec: str) -> None:
    enc, dec = (ulaw_encode, ulaw_decode) if codec == "PCMU" else (alaw_encode, alaw_decode)
    levels = dec(enc(ALL_INT16)).astype(np.int64)
    assert (np.diff(levels) >= 0).all()
    assert len(np.unique(levels)) == (255 if codec == "PCMU" else 256)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_sine_snr_is_toll_quality(codec: str) -> None:
    enc, dec = (ulaw_encode, ulaw_decode) if codec == "PCMU" else (alaw_encode, alaw_decode)
    t = np.arange(8000) / 8000
    x = np.rint(10000 * np.sin(2 * np.pi * 1004 * t)).astype(np.int16)
    noise = dec(enc(x)).astype(np.float64) - x
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr > 35  # G.711 gives ~38 dB over most of its range


def test_matches_stdlib_audioop_exhaustively() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            pytest.skip("audioop is gone (Python 3.13+): the known-value tests still apply")
    pcm = ALL_INT16.tobytes()
    codes = ALL_CODES.tobytes()
    assert ulaw_encode(ALL_INT16).tobytes() == audioop.lin2ulaw(pcm, 2)
    assert alaw_encode(ALL_INT16).tobytes() == audioop.lin2alaw(pcm, 2)
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_decode_accepts_bytes_and_arrays() -> None:
    payload = bytes([0xFF, 0x00, 0x80])
    assert ulaw_decode(payload).tolist() == [0, -32124, 32124]
    assert ulaw_decode(memoryview(payload)).tolist() == [0, -32124, 32124]
    assert alaw_decode(np.array([0xD5], dtype=np.uint8)).tolist() == [8]


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(4, dtype=np.int32))
    with pytest.raises(TypeError):
        alaw_encode(np.zeros(4, dtype=np.float64))
