"""The sandbox's window icon (_NET_WM_ICON), made from the program's PNG files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image

from sandboxapp.host.nested import ICON_SIDE, ICON_WORDS, icon_property


def png(path: Path, side: int, colour: tuple[int, int, int, int]) -> Path:
    Image.new("RGBA", (side, side), colour).save(path)
    return path


def test_each_size_is_width_height_then_argb_pixels_smallest_first(tmp_path: Path) -> None:
    big = png(tmp_path / "32.png", 32, (0x11, 0x22, 0x33, 0x80))
    small = png(tmp_path / "16.png", 16, (0xFF, 0x00, 0x00, 0xFF))
    value, _ = icon_property([big, small])
    assert value[:2] == [16, 16]
    assert set(value[2:2 + 256]) == {0xFFFF0000}
    assert value[258:260] == [32, 32]
    assert set(value[260:]) == {0x80112233}
    assert len(value) == 2 + 16 * 16 + 2 + 32 * 32


def test_files_that_are_not_small_pngs_are_left_out(tmp_path: Path) -> None:
    svg = tmp_path / "icon.svg"
    svg.write_text("<svg/>")
    huge = png(tmp_path / "huge.png", ICON_SIDE * 2, (0, 0, 0, 255))
    same = png(tmp_path / "same.png", 16, (0, 0, 255, 255))
    first = png(tmp_path / "first.png", 16, (0, 255, 0, 255))
    value, _ = icon_property([svg, huge, first, same])
    assert value[:2] == [16, 16] and set(value[2:]) == {0xFF00FF00}


def test_a_png_claiming_a_vast_size_is_left_out_before_it_is_decoded(tmp_path: Path) -> None:
    # A header that says 100000 x 100000 pixels (a decompression bomb): read, never decoded.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 6, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    value, unread = icon_property([bomb])
    assert value == [] and len(unread) == 1
    assert unread[0].startswith(f"{bomb}: ") and "decompression bomb" in unread[0]


def test_a_broken_png_costs_only_its_own_size(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = png(tmp_path / "16.png", 16, (0, 0, 255, 255))
    value, unread = icon_property([broken, good])
    assert value[:2] == [16, 16] and len(value) == 2 + 16 * 16
    assert len(unread) == 1 and unread[0].startswith(f"{broken}: ")


def test_the_sizes_fit_one_request_of_the_user_s_server(tmp_path: Path) -> None:
    """Without BIG-REQUESTS a property is at most 65535 words in one request: the smallest
    sizes are kept as long as they fit, and never a value the request cannot carry."""
    files = [png(tmp_path / f"{index}.png", 128 - index, (0, 0, 0, 255)) for index in range(8)]
    value, _ = icon_property(files)
    assert 0 < len(value) <= ICON_WORDS
    sides, rest = [], value
    while rest:
        sides.append(rest[0])
        rest = rest[2 + rest[0] * rest[1]:]
    assert sides == [121, 122, 123, 124]  # the smallest first; a fifth would not fit
