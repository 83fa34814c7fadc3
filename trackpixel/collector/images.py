"""The 1x1 transparent images the pixel endpoints return."""

from __future__ import annotations

import struct
import zlib

# GIF89a, 1x1, a two-entry colour table and a graphic control extension that marks colour 0
# transparent: the smallest GIF that every mail client and browser renders as transparent.
GIF = (
    b"GIF89a"
    + b"\x01\x00\x01\x00\x80\x00\x00"  # logical screen 1x1, global colour table of 2 entries
    + b"\x00\x00\x00\xff\xff\xff"  # colour table: black, white
    + b"\x21\xf9\x04\x01\x00\x00\x00\x00"  # graphic control extension: index 0 transparent
    + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"  # image descriptor at 0,0 size 1x1
    + b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one data sub-block, terminator
    + b"\x3b"  # trailer
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


# 1x1 greyscale-with-alpha PNG whose single pixel has alpha 0.
PNG = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 4, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00", 9))
    + _png_chunk(b"IEND", b"")
)
