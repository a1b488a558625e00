"""The SCP-ECG default Huffman table (EN 1064:2005, Section 2, table 19999): decoding only.

Codes are read most significant bit first, each lead's stream starting on
a byte boundary. The default table has 19 codes:

=====================  ====================================
code                   value
=====================  ====================================
``0``                  0
``1``×m ``0`` ``s``    +m (s = 0) or -m (s = 1), m = 1..8
``1111111110`` + 8     the next 8 bits, two's complement
``1111111111`` + 16    the next 16 bits, two's complement
=====================  ====================================

A stream may end in padding bits; decoding stops after the number of
samples Section 3 gives for the lead. Tables other than the default are
refused by the caller.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from device_adapters.ecg.errors import EcgImportError

__all__ = ["decode_default_huffman"]


def decode_default_huffman(data: bytes, count: int, lead: str) -> npt.NDArray[np.int64]:
    """``count`` values of one lead's stream."""
    bits = len(data) * 8
    if count > bits:  # every code is at least one bit
        raise EcgImportError(
            f"SCP-ECG Section 6 lead {lead}: {len(data)} bytes of Huffman data cannot hold {count} samples"
        )
    stream = int.from_bytes(data, "big")
    out = np.empty(count, dtype=np.int64)
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        if pos + n > bits:
            raise EcgImportError(
                f"SCP-ECG Section 6 lead {lead}: the Huffman data end before its {count} samples: "
                "the file is damaged or truncated"
            )
        value = (stream >> (bits - pos - n)) & ((1 << n) - 1)
        pos += n
        return value

    for index in range(count):
        ones = 0
        while ones < 10 and take(1):
            ones += 1
        if ones == 0:
            out[index] = 0
        elif ones <= 8:
            out[index] = -ones if take(1) else ones
        else:
            # nine ones then a zero: 8-bit original value; ten ones: 16-bit.
            width = 8 if ones == 9 else 16
            raw = take(width)
            out[index] = raw - (1 << width) if raw >> (width - 1) else raw
    return out
