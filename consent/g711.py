"""G.711 PCMU (mu-law) and PCMA (A-law) on whole numpy arrays.

Decoding is one 256-entry table lookup; encoding is one 65536-entry table lookup
indexed by the 16-bit sample reinterpreted as unsigned. The tables are computed
once, vectorised, from the segment formulas of ITU-T G.711 (the same arithmetic
as the reference Sun/CCITT g711.c), so every result is the standard's.
`audioop` is deprecated and gone from Python 3.13, hence this module.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]

# Byte a silent frame is filled with: the encoding of linear 0.
PCMU_SILENCE: Final = 0xFF
PCMA_SILENCE: Final = 0xD5


def _ulaw_decode_table() -> Int16Array:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    value = np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84)
    return value.astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    mantissa = (code & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        mantissa + 8,
        (mantissa + 0x108) << np.maximum(segment - 1, 0),
    )
    value = np.where(code & 0x80, magnitude, -magnitude)
    return value.astype(np.int16)


def _segment(magnitude: npt.NDArray[np.int32], ends: tuple[int, ...]) -> npt.NDArray[np.int32]:
    """Index of the first segment end >= magnitude (8 = beyond the last one)."""
    return np.searchsorted(np.array(ends, dtype=np.int32), magnitude, side="left").astype(np.int32)


def _ulaw_encode_table() -> UInt8Array:
    # Index i is the int16 sample whose two's-complement bit pattern is i.
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 2  # 14-bit, as G.711 mu-law works
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + (0x84 >> 2)
    seg = _segment(magnitude, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = np.where(
        seg >= 8,
        0x7F,
        (seg << 4) | ((magnitude >> (np.minimum(seg, 7) + 1)) & 0x0F),
    )
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> UInt8Array:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 3  # 13-bit, as G.711 A-law works
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    # Negative values are one's-complemented (not negated): A-law has no zero code.
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(magnitude, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((magnitude >> shift) & 0x0F))
    return (code ^ mask).astype(np.uint8)


ULAW_DECODE: Final = _ulaw_decode_table()
ALAW_DECODE: Final = _alaw_decode_table()
ULAW_ENCODE: Final = _ulaw_encode_table()
ALAW_ENCODE: Final = _alaw_encode_table()
for _table in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE):
    _table.flags.writeable = False


def _as_codes(data: bytes | bytearray | memoryview | UInt8Array) -> UInt8Array:
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False)
    return np.frombuffer(data, dtype=np.uint8)


def _as_index(samples: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    pcm = np.asarray(samples)
    if pcm.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, got {pcm.dtype}")
    return pcm.view(np.uint16)


def ulaw_decode(data: bytes | bytearray | memoryview | UInt8Array) -> Int16Array:
    """PCMU payload -> int16 samples (one per byte)."""
    return ULAW_DECODE[_as_codes(data)]


def alaw_decode(data: bytes | bytearray | memoryview | UInt8Array) -> Int16Array:
    """PCMA payload -> int16 samples (one per byte)."""
    return ALAW_DECODE[_as_codes(data)]


def ulaw_encode(samples: npt.ArrayLike) -> UInt8Array:
    """int16 samples -> PCMU codes. Call `.tobytes()` for an RTP payload."""
    return ULAW_ENCODE[_as_index(samples)]


def alaw_encode(samples: npt.ArrayLike) -> UInt8Array:
    """int16 samples -> PCMA codes. Call `.tobytes()` for an RTP payload."""
    return ALAW_ENCODE[_as_index(samples)]
