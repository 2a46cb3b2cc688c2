"""CRC-32C (Castagnoli) and TensorFlow's CRC masking.

TFRecord framing, SSTable blocks and V2 bundle entries all store ``mask(crc32c(data))``
(tensorflow core/lib/hash/crc32c.h). ``zlib.crc32`` is the IEEE polynomial and does not fit.
The ``crc32c`` package computes it with SSE4.2 / ARMv8 instructions (GB/s).
"""

from __future__ import annotations

import crc32c as _crc32c

_MASK_DELTA = 0xA282EAD8  # tsl/lib/hash/crc32c.h kMaskDelta


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
    return _crc32c.crc32c(data)


def mask(crc: int) -> int:
    """TF's masked CRC: rotate right by 15 bits and add a constant (mod 2**32)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    return mask(crc32c(data))
