"""The size of every picture the app draws from an upload: large enough to read, small enough to encode.

An overlay of a 32 x 32 upload is blown up so that its shorter side reaches ``SHORTEST`` pixels (a map the size
of a stamp cannot be read), but never past ``LONGEST`` on its longer side: scaling the shorter side of a
1024 x 1 strip up to 256 px would make a 262,144 x 256 picture that JPEG cannot encode and that costs hundreds
of megabytes to draw. A picture still more than ``MAX_ASPECT`` times as long as it is wide is then centred on
a grey canvas of that ratio, so that it shows as a picture and not as a line. ``fit`` gives the size to draw
at, ``framed`` the canvas, ``bounded`` both; the service passes every picture it returns through them.
"""
from __future__ import annotations

import math

from PIL import Image

SHORTEST = 256     # px: the shorter side a small upload is blown up to, while the longer side allows it
LONGEST = 2048     # px: no side of a returned picture is longer (an upload is decoded at most 1024 px long)
MAX_ASPECT = 4     # longer side over shorter side, at most; a thinner picture is put on a canvas of this ratio
CANVAS = (128, 128, 128)  # mid-grey: reads as "not the image" on the app's light and dark themes alike


def display_size(width: int, height: int, shortest: int = SHORTEST, longest: int = LONGEST) -> tuple[int, int]:
    """(width, height) to draw a ``width`` x ``height`` picture at: the shorter side raised to ``shortest``
    as far as the longer side stays within ``longest``, and a longer side over ``longest`` brought down to it.
    Every side stays at least 1 px; the aspect ratio is kept (to rounding)."""
    if width < 1 or height < 1:
        raise ValueError(f"a picture needs at least 1 x 1 pixels, got {width} x {height}")
    scale = max(1.0, shortest / min(width, height))
    scale = min(scale, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit(image: Image.Image, shortest: int = SHORTEST, longest: int = LONGEST,
        resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """``image`` resized to ``display_size`` (the image itself when that is its size already)."""
    size = display_size(*image.size, shortest=shortest, longest=longest)
    return image if size == image.size else image.resize(size, resample)


def framed(image: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """``image`` centred on a grey canvas when it is more than ``max_aspect`` times as long as it is wide;
    the canvas is as long as the image and ``max_aspect`` times shorter. Otherwise the image itself."""
    long_side, short_side = max(image.size), min(image.size)
    canvas_short = math.ceil(long_side / max_aspect)
    if short_side >= canvas_short:
        return image
    wide = image.width >= image.height
    size = (long_side, canvas_short) if wide else (canvas_short, long_side)
    canvas = Image.new("RGB", size, CANVAS)
    offset = ((0, (canvas_short - short_side) // 2) if wide else ((canvas_short - short_side) // 2, 0))
    canvas.paste(image.convert("RGB"), offset)
    return canvas


def bounded(image: Image.Image, shortest: int = SHORTEST, longest: int = LONGEST,
            resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """``image`` as the app returns it: resized by ``fit``, then ``framed`` if it is still a thin strip."""
    return framed(fit(image, shortest, longest, resample))


def shape_note(image: Image.Image) -> str:
    """A sentence for a picture that ``framed`` puts on a canvas (empty otherwise): the model saw only its
    centre square, so a map of it covers a sliver of the picture."""
    long_side, short_side = max(image.size), min(image.size)
    if long_side <= MAX_ASPECT * short_side:
        return ""
    shape = "wide" if image.width >= image.height else "tall"
    return (f"This image is about {long_side / short_side:,.0f} times as {shape} as it is "
            f"{'tall' if shape == 'wide' else 'wide'}, so it is shown as a strip on a grey canvas; the model saw "
            "only its centre square, which the map covers. Crop it closer to a square for a map you can read.")
