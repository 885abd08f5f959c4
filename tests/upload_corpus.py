"""A corpus of unusual and hostile uploads, made on the fly: what a public demo receives sooner or later.

``write_corpus(folder)`` writes every case and returns ``Upload`` records saying whether it must be
classified ("ok") or refused with a clear message ("error"). The unit tests, the HTTP tests and the soak
benchmark use the same corpus, so a case added here is tried everywhere.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess import MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class Upload:
    name: str        # file name, extension included (some lie about their content on purpose)
    path: Path
    expect: str      # "ok": a real image, must be classified; "error": must be refused with a message
    note: str


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                          np.full((height, width, 1), 128, np.float32)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, rows: int = 64) -> bytes:
    """A 1-bit greyscale PNG that announces ``width`` x ``height`` pixels in a file of a few kilobytes.

    Only the first ``rows`` rows have data: decoding would allocate the whole image before finding out.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(row * rows, 9)) + _png_chunk(b"IEND", b""))


def _exif_rotated() -> bytes:
    """Stored landscape 60 x 30 (left red, right blue) with EXIF orientation 6: shown portrait, red on top."""
    image = Image.new("RGB", (60, 30), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(image, "JPEG", exif=exif, quality=95)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_with_transparency() -> bytes:
    image = _gradient(48, 48).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def _rgba() -> bytes:
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[..., 0] = 255           # red everywhere...
    pixels[:, 20:, 3] = 255        # ...opaque on the right half, fully transparent on the left
    return _encode(Image.fromarray(pixels, "RGBA"), "PNG")


def _sixteen_bit() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    image = Image.fromarray(ramp)  # uint16: Pillow's mode I;16
    assert image.mode == "I;16", image.mode
    return _encode(image, "PNG")


def _float_tiff(low: float, high: float) -> bytes:
    ramp = np.tile(np.linspace(low, high, 64, dtype=np.float32), (48, 1))
    return _encode(Image.fromarray(ramp, "F"), "TIFF")


def _truncated_jpeg() -> bytes:
    data = _encode(_gradient(256, 256), "JPEG", quality=90)
    return data[: len(data) // 2]


def cases(include_large: bool = True) -> list[tuple[str, bytes, str, str]]:
    """(file name, bytes, expect, note) for every case; ``include_large`` adds the 27-megapixel photo."""
    rng = np.random.default_rng(0)
    result = [
        ("not_an_image.txt", b"This is a text file, not a picture.\n" * 20, "error", "plain text"),
        ("empty.jpg", b"", "error", "zero bytes"),
        ("truncated.jpg", _truncated_jpeg(), "error", "first half of a JPEG"),
        ("random_bytes.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error", "random bytes"),
        ("page.jpg", b"<!DOCTYPE html><html><head><title>x</title></head><body>not a photo</body></html>\n",
         "error", "HTML renamed to .jpg"),
        ("bomb.png", png_bomb(30000, 30000), "error", "900-megapixel PNG header in a few kB (Pillow refuses)"),
        ("bomb_100mp.png", png_bomb(10000, 10000), "error",
         "100-megapixel PNG header: under Pillow's own limit, over the app's"),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" '
                        b'height="10"/></svg>', "error", "SVG (vector, not decoded)"),
        ("postscript.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "error",
         "EPS: would run Ghostscript if decoded"),
        ("sixteen_bit.png", _sixteen_bit(), "ok", "16-bit greyscale PNG (mode I;16)"),
        ("cmyk.jpg", _encode(Image.new("CMYK", (40, 40), (255, 0, 0, 0)), "JPEG"), "ok", "CMYK JPEG, pure cyan"),
        ("rgba.png", _rgba(), "ok", "RGBA, left half transparent"),
        ("palette.png", _palette_with_transparency(), "ok", "palette PNG with a transparent index"),
        ("animated.gif", _animated_gif(), "ok", "3-frame GIF, first frame red"),
        ("exif_rotated.jpg", _exif_rotated(), "ok", "EXIF orientation 6"),
        ("float.tiff", _float_tiff(0.0, 1.0), "ok", "32-bit float TIFF in [0, 1]"),
        ("float_hdr.tiff", _float_tiff(-1000.0, 5000.0), "ok", "32-bit float TIFF outside [0, 1]"),
        ("photo.webp", _encode(_gradient(64, 48), "WEBP", quality=80), "ok", "WebP"),
        ("one_pixel.png", _encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "ok", "1 x 1"),
        ("thin.png", _encode(_gradient(4000, 3), "PNG"), "ok", "4000 x 3"),
        ("grey.bmp", _encode(_gradient(50, 40).convert("L"), "BMP"), "ok", "8-bit greyscale BMP"),
    ]
    if include_large:
        result.append(("large.jpg", _encode(_gradient(6000, 4500), "JPEG", quality=60), "ok",
                       "6000 x 4500 JPEG (27 megapixels)"))
    return result


def write_corpus(folder: str | Path, include_large: bool = True, include_oversize: bool = False) -> list[Upload]:
    """Write every case into ``folder``; ``include_oversize`` adds a file over the upload limit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uploads = []
    for name, data, expect, note in cases(include_large):
        path = folder / name
        path.write_bytes(data)
        uploads.append(Upload(name, path, expect, note))
    if include_oversize:
        path = folder / "oversize.jpg"
        with path.open("wb") as handle:
            handle.write(b"\xff\xd8\xff\xe0" + b"\x00" * (MAX_UPLOAD_BYTES + 1024))
        uploads.append(Upload("oversize.jpg", path, "error", "over the upload size limit"))
    return uploads
